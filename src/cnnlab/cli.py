"""The `cnnlab` command line: a thin layer over the Python API. Every user error is one line, exit 2."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import sys
from pathlib import Path

from .errors import CnnlabError
from .text import did_you_mean, plural

def _help(name: str) -> str:
    """A training setting's help text, written once beside the setting (train/config.py)."""
    from .train.config import FIELDS

    return FIELDS[name].metadata["help"]


WEIGHTS_HELP = "best: the weights of the best validation epoch; last: those of the last epoch"


class _HelpFormatter(argparse.HelpFormatter):
    """argparse's, with each option's default after its help where it has one worth saying."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" not in text and action.default not in (None, False, argparse.SUPPRESS) and \
                (action.option_strings or action.nargs in ("?", "*")):
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong option is one line on stderr and exit status 2, and help shows the defaults."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    _commands: dict = {}  # name -> subcommand parser, on the top-level parser (build_parser sets it)

    def error(self, message: str) -> None:
        choice = re.search(r"invalid choice: '(.*?)' \(choose from (.*)\)$", message)
        if choice:  # a mistyped subcommand or choice: the closest one
            message += did_you_mean(choice.group(1), re.findall(r"'([^']*)'", choice.group(2)))
        raise CnnlabError(f"{message} (see `{self.prog} --help`)")

    def parse_args(self, args=None, namespace=None) -> argparse.Namespace:
        """As argparse's, but an unknown option is reported by its subcommand with the closest option it has."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._commands.get(getattr(parsed, "command", None), self)
            options = [s for action in command._actions for s in action.option_strings]
            unknown = next((e.split("=")[0] for e in extras if e.startswith("-")), extras[0])
            command.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(unknown, options)}")
        return parsed


class _OperationsFormatter(_HelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Keeps the table of augmentation operations as it is laid out."""


def _with_operations(format_help):
    """`cnnlab augment --help` ends with every operation, read from the table that defines them (imported only
    when the help is shown: it brings torch)."""
    def formatted() -> str:
        from .data.augment import policy_help

        return format_help() + "\noperations, applied in this order whatever the order written:\n" + \
            policy_help() + "\n"
    return formatted


def parse_kwargs(items: list[str]) -> dict:
    """['bn=false', 'kernel_size=7', 'width=0.5'] -> {'bn': False, 'kernel_size': 7, 'width': 0.5}"""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CnnlabError(f"--model-kwargs: expected key=value, got '{item}'")
        if key.replace("-", "_") in out:  # the later would silently win
            raise CnnlabError(f"--model-kwargs: '{key}' is given twice; give each switch once")
        out[key.replace("-", "_")] = _parse_value(raw)
    return out


def _parse_value(raw: str):
    if raw.lower() in ("true", "false", "yes", "no", "on", "off"):
        return raw.lower() in ("true", "yes", "on")
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def _add_train_options(p: argparse.ArgumentParser) -> None:
    from .train.config import FIELDS

    p.add_argument("--config", type=Path, help="YAML file of settings; options given here override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint, "
                   "with the settings in its config.yaml (a larger --epochs extends a finished run)")
    for f in FIELDS.values():
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "" if default in (None, "", {}) else f" (default: {default})"
        kw = {"dest": f.name, "default": argparse.SUPPRESS,
              "help": (f.metadata["help"] + shown).replace("%", "%%")}  # argparse formats help with %
        if f.name == "model_kwargs":
            p.add_argument(flag, nargs="+", metavar="KEY=VALUE", **kw)
        elif f.name == "quiet":
            p.add_argument("-q", flag, action="store_true", **kw)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            kind = {"image_size": int, "out": str, "recipe": str, "variant": str, "model_config": str,
                    "init_from": str, "freeze": str}.get(f.name, type(default))
            p.add_argument(flag, type=kind, metavar=f.name.upper(), **kw)


def train_config(args: argparse.Namespace):
    """The run's settings in layers: (a resumed run's own config.yaml,) recipe, model config, --config file,
    the options given (see train/config.py)."""
    from .train.config import read_settings, resolve
    from .train.run_folder import RunFolder

    given = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "resume", "argv", "json")}
    if "model_kwargs" in given:
        given["model_kwargs"] = parse_kwargs(given["model_kwargs"])
    layers, sources = [], []
    if args.resume:
        if not given.get("out"):
            raise CnnlabError("--resume needs --out, the folder of the run to continue")
        folder = RunFolder(given["out"])
        if not folder.has_checkpoint:
            raise CnnlabError(f"--resume: {folder} holds no checkpoint to continue from")
        saved = folder.read_config()
        saved.pop("out", None)  # the folder is where it is now, wherever it was written
        layers.append(saved)
        sources.append(str(folder.config))
    if args.config:
        layers.append(read_settings(args.config))
        sources.append(str(args.config))
    layers.append(given)
    sources.append("options")
    cfg = resolve(layers, sources)
    # the schedule holds a warm-up to the run's last step, so one asked for on the command line that long
    # would leave no decay at all (the default, 1 epoch, a recipe's and a config file's, which may be another
    # run's config.yaml, are held there silently: --epochs 1 is a quick look)
    if "warmup_epochs" in given and cfg.schedule in ("onecycle", "cosine") and cfg.warmup_epochs >= cfg.epochs:
        raise CnnlabError(f"--warmup-epochs {cfg.warmup_epochs:g} is as long as the run's {cfg.epochs} "
                          f"epoch{'s' if cfg.epochs > 1 else ''} or longer: the rate would never decay; give "
                          f"fewer warm-up epochs or more epochs")
    return cfg


def cmd_train(args: argparse.Namespace) -> int:
    from .models.registry import check_model_kwargs
    from .train import train

    cfg = train_config(args)
    check_model_kwargs(cfg.model, cfg.model_kwargs)  # num_classes=5 is one line, before the data loads
    s = train(cfg, resume=args.resume, holdout_given="holdout" in vars(args))
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 reports
        return 0
    if args.json:
        print(json.dumps(s))
        return 0
    if not cfg.quiet:
        top5 = f"  (top-5 {s['test_top5_accuracy']:.4f})" if s["test_top5_accuracy"] is not None else ""
        processes = f", {s['processes']} processes" if s["processes"] > 1 else ""
        print(f"\n{s['model']} on {s['dataset']} ({s['image_size']}): {s['params']:,} params, "
              f"{s['macs'] / 1e6:.1f}M MACs per image, {s['precision']} on {s['device']} x{s['threads']}{processes}")
        print(f"  {plural(s['epochs'], 'epoch')} in {s['train_seconds']:.1f}s ({s['images_per_second']:.0f} img/s, "
              f"{s['train_flops'] / 1e12:.3g} TFLOP of training)")
        print(f"  best val accuracy {s['best_val_accuracy']:.4f} (epoch {s['best_epoch']})")
        print(f"  test accuracy     {s['test_accuracy']:.4f}{top5}")
        for note in s["notes"]:
            print(f"  note: {note}")
        for d in s["diagnoses"] or []:
            print(f"  diagnosis at step {d['step']}: {d['kind']} ({d['evidence']}); `cnnlab diagnose` explains")
        print(f"  run folder: {s['run_dir']}")
        if s.get("report"):
            print(f"  report:     {s['report']}")
    else:
        print(f"test accuracy {s['test_accuracy']:.4f}; run folder: {s['run_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_run
    from .report.confusion import format_confusion, write_confusion_png

    r = evaluate_run(args.checkpoint, args.data, weights=args.weights, holdout=args.holdout)
    split = "its own test split" if r["run_split"] else "test split"
    top5 = len(r["classes"]) > 5  # with 5 classes or fewer, top-5 accuracy is 1 and says nothing
    title = f"{r['model']} on {r['dataset']}: test accuracy {r['accuracy']:.4f} ({plural(r['count'], 'image')})"
    png = write_confusion_png(r["confusion_matrix"], r["classes"],
                              args.confusion_png or Path(args.checkpoint) / "confusion_matrix.png", title)
    if args.json:
        print(json.dumps({**r, "confusion_png": str(png)}))
        return 0
    print(f"{r['model']} on {r['dataset']} {split} ({plural(r['count'], 'image')}): accuracy {r['accuracy']:.4f}"
          + (f", top-5 {r['top5_accuracy']:.4f}" if top5 else ""))
    width = max(len(c) for c in r["classes"])
    for c, acc in zip(r["classes"], r["per_class_accuracy"]):
        print(f"  {c:<{width}}  {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    print("  " + format_confusion(r["confusion_matrix"], r["classes"]).replace("\n", "\n  "))
    print(f"confusion matrix image: {png}")
    return 0


def _path_given(text: str) -> Path:
    """A path argument that is not empty: Path('') is '.', so an unset shell variable ("$IMG") would name
    the current folder and everything below it."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path")
    return Path(text)


def cmd_predict(args: argparse.Namespace) -> int:
    """Predictions on stdout (and in --csv); an unreadable file is one line on stderr, the rest are predicted,
    and the exit status is then 2."""
    from .data.dataset import printable
    from .inference import image_files, predict_images
    from .runtime.files import resolved
    from .train.run_folder import RunFolder

    if args.csv and RunFolder(args.checkpoint).owns(args.csv):
        raise CnnlabError(f"--csv {args.csv}: would overwrite the run's own files; choose another name")
    files = image_files(args.images)  # folders listed once: predict_images finds files where they were
    if args.csv and resolved(args.csv) in {resolved(f) for f in files}:
        raise CnnlabError(f"--csv {args.csv}: is one of the images to predict; choose another name")
    results = predict_images(args.checkpoint, files, top_k=args.top_k, weights=args.weights)
    done = [r for r in results if "top" in r]
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"cnnlab: error: {r['error']}", file=sys.stderr)
    if args.csv:
        _write_predictions_csv(args.csv, done)
    if args.json:
        print(json.dumps(results))
    else:
        for r in done:
            # a newline in a file or class name would print a line that reads as another prediction
            print(printable(r["image"]) + ": " + ", ".join(f"{printable(p['class'])} {p['probability']:.3f}"
                                                         for p in r["top"]))
        if not args.quiet:
            print(f"{plural(len(done), 'image')} predicted" + (f", {len(failed)} unreadable" if failed else "") +
                  (f"; CSV in {args.csv}" if args.csv else ""), file=sys.stderr)
    return 2 if failed else 0


def _write_predictions_csv(path: Path, results: list[dict]) -> None:
    """image, then class and probability for each of the top k (class_1, probability_1, ...)."""
    import csv

    k = max((len(r["top"]) for r in results), default=0)
    try:
        with open(path, "w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["image"] + [f"{c}_{i}" for i in range(1, k + 1) for c in ("class", "probability")])
            for r in results:
                out.writerow([r["image"]] + [v for p in r["top"] for v in (p["class"], f"{p['probability']:.6f}")])
    except OSError as exc:
        raise CnnlabError(f"--csv {path}: cannot write ({exc.strerror})") from None


def cmd_export(args: argparse.Namespace) -> int:
    from .export import check_export, export_run

    r = export_run(args.run_dir, args.format, args.out, weights=args.weights)
    r["max_abs_diff"] = check_export(r["path"], args.format, args.run_dir, args.weights) if args.check else None
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']} ({args.weights} weights) exported to {r['path']}")
    print(f"  input: {r['input']}")
    where = f"in {r['description']} beside it" if "description" in r else "in its metadata_props"
    print(f"  output: logits for {plural(len(r['classes']), 'class', 'classes')}; class names {where}")
    if r["max_abs_diff"] is not None:
        print(f"  checked on 4 random images against PyTorch: max abs logit difference {r['max_abs_diff']:.1e}")
    elif args.check:
        print("  not checked: ONNX Runtime is not installed (pip install onnxruntime)")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from .catalog import catalog

    rows = catalog()  # stored, so that listing needs neither torch nor 30 models built
    if args.json:
        print(json.dumps(rows))
        return 0
    wide = max(12, *(len(r["name"]) for r in rows))
    print(f"{'model':<{wide}} {'family':<14} {'params':>13}  switches (defaults)")
    for r in rows:
        sw = " ".join(f"{k}={v}" for k, v in r["switches"].items())
        print(f"{r['name']:<{wide}} {r['family']:<14} {r['params']:>13,}  {sw}   ({plural(r['num_classes'], 'class')})")
    return 0


def _summary_source(args: argparse.Namespace) -> tuple[str, dict, tuple[int, int, int], int | None]:
    """What `cnnlab summary` describes: (model name, switches, input shape, classes), from a model name, a
    run folder (its model.json) or a model file (--model-config, as `cnnlab search report` writes it)."""
    from .models.summary import parse_input_shape

    target, config = args.model, args.model_config
    if target and config:
        raise CnnlabError(f"give a model ({target}) or --model-config {config}, not both")
    if target is None and config is None:
        raise CnnlabError("give a model name, a run folder or --model-config FILE (see `cnnlab summary --help`)")
    if config is None and Path(target).suffix.lower() in (".yaml", ".yml") and Path(target).is_file():
        target, config = None, target
    given = parse_kwargs(args.model_kwargs or [])  # switches given override a file's
    channels, size, classes = 3, 32, args.classes
    if config:
        from .train import TrainConfig

        cfg = TrainConfig.from_dict({"model_config": config}, f"--model-config {config}")
        name, switches, size = cfg.model, {**cfg.model_kwargs, **given}, cfg.image_size or size
    elif Path(target).is_dir():
        from .train.run_folder import RunFolder

        spec = RunFolder(target).require("summary").read_spec()
        name, switches = spec["model"], {**spec["model_kwargs"], **given}
        channels, size = spec["in_channels"], spec["image_size"]
        classes = spec["num_classes"] if classes is None else classes
    else:
        name, switches = target, given
    shape = parse_input_shape(args.input) if args.input is not None else (channels, size, size)
    return name, switches, shape, classes


def cmd_summary(args: argparse.Namespace) -> int:
    import torch

    from .models.equivariant import equivariance_note
    from .models.registry import check_model_kwargs
    from .models.summary import format_summary, measure_latency_ms, summarize
    from .runtime.memory import create_model_within_memory, ensure_fits

    name, switches, shape, classes = _summary_source(args)
    check_model_kwargs(name, switches)
    # the trace holds a layer's input and output at once: at full resolution, these models have up to 64
    # channels (or the input's, where more), 4 bytes a value
    ensure_fits(2 * max(shape[0], 64) * shape[1] * shape[2] * 4, torch.device("cpu"),
                f"a summary of a {'x'.join(map(str, shape))} input")
    model = create_model_within_memory(name, torch.device("cpu"), num_classes=classes, in_channels=shape[0],
                                       **switches)
    s = summarize(model, shape, name)
    latency = {}
    if args.latency:  # what `cnnlab search --max-latency` compares against
        latency = {"latency_ms": round(measure_latency_ms(model, shape, args.device, args.precision), 4),
                   "latency_batch": 1}
    if args.json:
        print(json.dumps({"model": name, **s.to_dict(), **latency}))
    else:
        print(format_summary(s, name))
        if latency:
            print(f"latency {latency['latency_ms']:.3f} ms per image at batch 1, measured here "
                  f"(--device {args.device}, --precision {args.precision})")
    note = equivariance_note(model, shape[1], shape[0], name) if shape[1] == shape[2] else None
    if note:
        print(f"warning: {note}", file=sys.stderr)
    return 0


def cmd_diagnose(args: argparse.Namespace) -> int:
    from .diagnose.report import format_report, load_health, write_plots

    health = load_health(args.run_dir)
    plots = write_plots(health, args.plots or args.run_dir / "diagnose")
    if args.json:
        print(json.dumps({"run_dir": health["run_dir"], "diagnoses": health["diagnoses"], "plots": plots,
                          "samples": len(health["samples"])}))
    else:
        print(format_report(health, plots))
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from .report.augment_grid import augment_grid

    out = augment_grid(args.data, args.policy, args.out, rows=args.rows, cols=args.cols, seed=args.seed,
                       image_size=args.image_size, skip_bad=args.skip_bad)
    print(f"{out}: first row original, {plural(args.rows - 1, 'row')} augmented by '{args.policy}'")
    return 0


def cmd_invariance(args: argparse.Namespace) -> int:
    from .diagnose.invariance import KNOWN, measure_invariance

    names = [t.strip() for t in args.transforms.split(",") if t.strip()]
    if not names:
        raise CnnlabError(f"--transforms: no transform named; known: {KNOWN}")
    result = measure_invariance(args.checkpoint, args.data, names, weights=args.weights, holdout=args.holdout)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'transform':<12} {'predictions changed':>20} {'relative logit change':>22}")
    for name, r in result.items():
        print(f"{name:<12} {r['prediction_change']:>20.4f} {r['logit_change']:>22.2e}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from . import studies
    from .studies.harness import run_study, table

    out = args.out or Path("studies") / args.name
    results = run_study(studies.get(args.name), out, args.budget, args.seeds, args.data, quiet=args.quiet)
    if args.json:
        print(json.dumps({k: v for k, v in results.items() if k != "contenders"} |
                         {"contenders": {k: {"mean": c["mean"], "sd": c["sd"]} for k, c in
                                         results["contenders"].items()}}, default=str))
        return 0
    print(table(results))
    print(f"results.json, table.md, plots and report.html in {out}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report.html import write_report

    print(write_report(args.dir))
    return 0


def cmd_tour(args: argparse.Namespace) -> int:
    from .studies.tour import run_tour

    index = run_tour(args.out, args.budget, args.seeds, quiet=args.quiet, only=args.only)
    print(f"index: {index}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .report.html import write_report
    from .search.report import report
    from .search.run import run_search

    objectives = tuple(o.strip() for o in args.objectives.split(","))
    run_search(args.space, args.data, args.trials, args.study, args.out, storage=args.storage, strategy=args.strategy,
               epochs=args.epochs, seed=args.seed, max_params=args.max_params, max_macs=args.max_macs,
               image_size=args.image_size, quiet=args.quiet, objectives=objectives, pruner=args.pruner,
               max_latency=args.max_latency, workers=args.workers, holdout=args.holdout)
    print(report(args.out, args.study, args.storage, as_json=args.json))
    page = write_report(args.out, args.study, args.storage)
    if not args.json:
        print(f"report: {page}")
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    from .search.report import report

    print(report(args.dir, args.study, args.storage, as_json=args.json))
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from .data import cache, data_root
    from .data.limits import human

    root = cache.cache_root()
    if args.action == "clear":
        count, size = cache.clear()
        print(f"removed {count} entr{'y' if count == 1 else 'ies'} ({human(size)}) from {root}")
        return 0
    entries = cache.list_entries()
    if args.json:
        print(json.dumps({"cache": str(root), "downloads": str(data_root()), "entries": entries}))
        return 0
    print(f"decoded-array cache: {root} ($CNNLAB_CACHE/arrays); downloads: {data_root()} ($CNNLAB_DATA)")
    if not entries:
        print("  no cache entries")
    for e in entries:
        if e["kind"] == "entry":
            what = f"{e['images']} images, {e['classes']} classes, from {e['source']}"
        elif e["kind"] == "damaged":
            what = f"damaged ({e['problem']}); rebuilt at its next use"
        else:
            what = "temporary: " + ("being written" if e["writer_alive"] else "left by a killed writer")
        print(f"  {e['key']:<20}  {human(e['bytes']):>10}  {what}")
    if entries:
        print(f"  {len(entries)} in all, {human(sum(e['bytes'] for e in entries))}; `cnnlab cache clear` removes them")
    return 0


def _add_split_options(p: argparse.ArgumentParser) -> None:
    """`--data` and `--holdout` of the commands that read a run's test split: by default exactly the run's own."""
    p.add_argument("--data", help="the data set to evaluate, as `train --data` takes it (default: the run's own, "
                   "read from its run folder, on its own test split)")
    p.add_argument("--holdout", type=float, help="the test split of a folder without test/, as `train --holdout` "
                   "takes it (default: the run's)")


def build_parser(train_options: bool = True) -> argparse.ArgumentParser:
    """The whole command line; `train_options=False` leaves out `train`'s options, which import the trainer
    (and torch): `main` adds them only when the command is `train`, so that everything else starts at once."""
    parser = _Parser(prog="cnnlab", description="Build, train, diagnose and search CNNs for image classification.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__import__('cnnlab').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                title="commands (`cnnlab COMMAND --help` for each)")
    parser._commands = sub.choices  # name -> subcommand parser, for suggestions

    p = sub.add_parser("train", help="train a model", description="Train a model with SGD and backpropagation.")
    if train_options:
        _add_train_options(p)
    p.add_argument("--json", action="store_true", help="print the run's summary as one JSON object")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run on a data set's test split")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    _add_split_options(p)
    p.add_argument("--weights", choices=("best", "last"), default="best", help=WEIGHTS_HELP)
    p.add_argument("--confusion-png", type=Path, metavar="FILE",
                   help="where to draw the confusion matrix (default: CHECKPOINT/confusion_matrix.png)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    p.add_argument("images", nargs="+", type=_path_given, metavar="IMAGE",
                   help="image files, or folders (every image file below them); an unreadable file is reported "
                   "on stderr, the others are predicted, and the exit status is then 2")
    p.add_argument("--top-k", type=int, default=5, help="classes to list per image, most probable first")
    p.add_argument("--weights", choices=("best", "last"), default="best", help=WEIGHTS_HELP)
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the predictions as CSV: image, class_1, "
                   "probability_1, ...")
    p.add_argument("--json", action="store_true", help="print JSON: a list of {image, top} (or {image, error})")
    p.add_argument("-q", "--quiet", action="store_true", help="no closing count of images predicted")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("export", help="write a trained run as one ONNX or TorchScript file",
                       description="Export a run's model with its normalisation and test-time augmentation "
                       "folded in: the file takes images NCHW at the run's size, values 0..255, any batch size, "
                       "and gives logits; the class names travel with it (ONNX metadata, or FILE.json beside a "
                       "TorchScript file). ONNX needs `pip install 'cnnlab[export]'`.")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `cnnlab train --out`")
    p.add_argument("--format", choices=("onnx", "torchscript"), default="onnx",
                   help="onnx (onnxruntime and other runtimes; float32 input) or torchscript (torch.jit.load; "
                   "uint8 or float input)")
    p.add_argument("--out", type=Path, metavar="FILE", help="the file to write (default: RUN_DIR/model.onnx or "
                   "RUN_DIR/model.pt)")
    p.add_argument("--weights", choices=("best", "last"), default="best", help=WEIGHTS_HELP)
    p.add_argument("--check", action=argparse.BooleanOptionalAction, default=True,
                   help="run the exported file on 4 random images and print its largest logit difference from "
                   "PyTorch's")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true", help="print a JSON list: name, family, params, num_classes, "
                   "switches")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields")
    p.add_argument("model", nargs="?", metavar="MODEL",
                   help="a model name (see `cnnlab models`), a run folder (its model.json) or a model YAML file")
    p.add_argument("--model-config", metavar="FILE", help=_help("model_config"))
    p.add_argument("--input", help="CxHxW (default: a run folder's own, else 3x32x32 or 3 x the file's image_size)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the run's, else the "
                   "model's)")
    p.add_argument("--model-kwargs", nargs="+", metavar="KEY=VALUE", help=_help("model_kwargs"))
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--latency", action="store_true", help="also measure inference latency at batch 1 here")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="for --latency")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="for --latency")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("augment", help="a grid of augmented training images: what the model sees",
                       formatter_class=_OperationsFormatter)
    p.format_help = _with_operations(p.format_help)
    p.add_argument("--data", default="digits", help=_help("data"))
    p.add_argument("--policy", required=True, help=_help("augment"))
    p.add_argument("--out", required=True, type=Path, help="the grid image (.png or .jpg)")
    p.add_argument("--rows", type=int, default=4, help="rows: the originals, then augmented draws")
    p.add_argument("--cols", type=int, default=8, help="images per row")
    p.add_argument("--seed", type=int, default=0, help="which images, and the augmentations drawn")
    p.add_argument("--image-size", type=int, default=None, help=_help("image_size"))
    p.add_argument("--skip-bad", action="store_true", help=_help("skip_bad"))
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("invariance", help="how much a trained model's predictions change under transforms")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    _add_split_options(p)
    p.add_argument("--transforms", default="rot90,rot180,hflip,rot15,translate2",
                   help="comma-separated: rotD (rot90, rot15, ...), hflip, vflip, translateN")
    p.add_argument("--weights", choices=("best", "last"), default="best", help=WEIGHTS_HELP)
    p.add_argument("--json", action="store_true", help="one object keyed by transform")
    p.set_defaults(func=cmd_invariance)

    names = ("filters", "depth", "vanishing", "precision", "batchnorm", "residual", "augmentation", "rotation",
             "search")  # cnnlab.studies.NAMES, written here so that --help needs no import
    p = sub.add_parser("study", help="a claim of the CNN playbook as a measured study: contenders over seeds, "
                       "results, plots, a computed verdict and report.html")
    p.add_argument("name", choices=names, metavar="NAME", help="one of " + ", ".join(names))
    p.add_argument("--data", help="data set or path (default: digits at --budget small, CIFAR-10 at full)")
    p.add_argument("--budget", default="small", choices=("small", "full", "tiny"), metavar="{small,full}",
                   help="small: digits, minutes; full: CIFAR-10 (../shared/data, --holdout 1000), hours")
    p.add_argument("--seeds", type=int, help="seeds per contender (default: 3)")
    p.add_argument("--out", type=Path, help="folder for runs/, results.json, table.md, plots and report.html "
                   "(default: studies/NAME); finished runs found there are reused")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per contender on stderr")
    p.add_argument("--json", action="store_true", help="print the results (means, spreads, verdict) as JSON")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("report", help="write report.html for a run, search, study or tour folder")
    p.add_argument("dir", type=Path, metavar="DIR", help="a folder cnnlab wrote")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("tour", help="every study at the small budget and an index page of their verdicts")
    p.add_argument("--out", type=Path, default=Path("tour"), help="folder of the studies and index.html")
    p.add_argument("--budget", default="small", choices=("small", "full", "tiny"), metavar="{small,full}",
                   help="the studies' budget")
    p.add_argument("--seeds", type=int, help="seeds per contender (default: the budget's)")
    p.add_argument("--only", nargs="+", choices=names, metavar="NAME", help="these studies only")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per contender on stderr")
    p.set_defaults(func=cmd_tour)

    from .search import PRUNERS, STRATEGIES

    p = sub.add_parser("search", help="architecture search (`cnnlab search report DIR` shows the results)")
    p.add_argument("--space", required=True, help="a ready space (vgg-like, resnet-like, mixed) or a YAML file")
    p.add_argument("--data", default="digits", help=_help("data"))
    p.add_argument("--trials", type=int, required=True,
                   help="architectures to train in all (those rejected before training do not count)")
    p.add_argument("--study", default="search", help="study name (workers sharing a storage join it)")
    p.add_argument("--out", required=True, type=Path, help="folder for study.db, trials/ and the report")
    p.add_argument("--storage", help="database URL (default: sqlite in --out; postgresql://... for many machines)")
    p.add_argument("--strategy", default="tpe", choices=STRATEGIES,
                   help="evolution: regularized (aging) evolution; nsga2: for multi-objective searches (default: tpe)")
    p.add_argument("--objectives", default="accuracy", help="accuracy, or accuracy,params (or macs, latency): "
                   "a multi-objective search returning the Pareto front")
    p.add_argument("--pruner", default="none", choices=PRUNERS,
                   help="stop unpromising trials early: successive halving or Hyperband (single-objective only)")
    p.add_argument("--workers", type=int, default=1,
                   help="processes on this machine sharing the study, at most one per core")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per trial")
    p.add_argument("--max-params", type=int, help="reject larger architectures before training")
    p.add_argument("--max-macs", type=int, help="reject architectures with more multiply-adds")
    p.add_argument("--max-latency", type=float, help="reject architectures slower than this many ms per image "
                   "(batch 1, measured here before training)")
    p.add_argument("--image-size", type=int, default=None, help=_help("image_size"))
    p.add_argument("--holdout", type=float, default=None, help=_help("holdout"))
    p.add_argument("--seed", type=int, default=0, help="the search's seed (each trial's draws come from it and "
                   "the trial's number; every trial trains with it)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress lines; the result is still printed")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.set_defaults(func=cmd_search)

    # `cnnlab search report DIR`: main() joins the two words into this one command name
    p = sub.add_parser("search report", help="the results of a search: leaderboard, pareto.png, best_model.yaml")
    p.add_argument("dir", type=Path, metavar="DIR", help="the --out folder of `cnnlab search`")
    p.add_argument("--study", help="study name, where the storage holds several")
    p.add_argument("--storage", help="database URL, if not the folder's study.db")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.set_defaults(func=cmd_search_report)

    p = sub.add_parser("cache", help="list or clear the cache of decoded images",
                       description="Decoded images are cached in $CNNLAB_CACHE/arrays (default "
                       "~/.cache/cnnlab/arrays); downloads go to $CNNLAB_DATA (default ~/.cache/cnnlab/datasets) "
                       "and are not touched here.")
    p.add_argument("action", choices=("list", "clear"),
                   help="list: each entry, its source and size; clear: remove them all")
    p.add_argument("--json", action="store_true", help="list: one JSON object")
    p.set_defaults(func=cmd_cache)

    p = sub.add_parser("diagnose", help="gradient health of a run: diagnoses, evidence, remedies and plots")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="run folder written by `cnnlab train --out`")
    p.add_argument("--plots", type=Path, help="folder for the plots (default: RUN_DIR/diagnose)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_diagnose)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["search", "report"]:  # `cnnlab search report DIR`
        argv = ["search report", *argv[2:]]
    try:
        args = build_parser(train_options=argv[:1] == ["train"]).parse_args(argv)
        return args.func(args)
    except CnnlabError as exc:
        print(f"cnnlab: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cnnlab: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`: not an error worth a traceback
        sys.stderr.close()
        return 0
    except OSError as exc:  # a path the file system refuses (a name too long, no space left, no permission)
        if exc.filename is None:
            raise
        name = str(exc.filename)
        print(f"cnnlab: error: {name if len(name) <= 120 else name[:117] + '...'}: {exc.strerror}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
