"""The `cnnlab` command line: a thin layer over the Python API. Every user error is one line, exit 2."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from .errors import CnnlabError

HELP = {
    "model_config": "YAML file with model and model_kwargs (e.g. best_model.yaml of `cnnlab search report`)",
    "recipe": "a named set of settings, e.g. cifar10-fast (airbench94's recipe); options given override it",
    "augment": "batched augmentation, e.g. flip,translate=4 or crop=0.35,rotate=15:reflect,color=0.4,cutout=8,"
    "mixup=0.2 (see `cnnlab augment`)",
    "warmup_from": "onecycle: start the warm-up at this fraction of the peak lr",
    "decay_to": "onecycle: end at this fraction of the peak lr",
    "norm_lr_scale": "lr multiplier for batch-norm parameters (decay per step unchanged)",
    "lookahead": "airbench's lookahead averaging of the weights every 5 steps",
    "eval_every": "epochs between validation passes (0: after the last epoch only)",
    "tta": "test-time augmentation: 0 none, 1 mirror, 2 mirror + 1-pixel translations",
    "monitor_every": "steps between per-layer gradient-health samples (0: monitor off)",
    "on_nonfinite": "a NaN/inf loss or gradient: stop (default), skip the step, or rollback to the last "
    "checkpoint; skip and rollback halve the lr",
    "loss_scaling": "fp16: dynamic loss scaling (turn off only to watch gradients underflow)",
    "compile": "torch.compile the model",
    "keep_freed_memory": "CPU on Linux: keep freed memory for the next step (faster; the process keeps its peak "
    "memory until it exits)", "sync_bn": "distributed runs: batch-norm statistics over all ranks",
    "model": "model name (see `cnnlab models`)", "data": "registered data set or a path (folder, .tar.gz, "
    "CIFAR batches, MNIST IDX)", "download": "fetch a registered data set (cifar10, cifar100, mnist, "
    "fashion-mnist) if absent", "image_size": "size models see; also resizes images of mixed sizes",
    "holdout": "folders without test/: fraction (<1) or count (>=1) per class held out as the test split",
    "val_fraction": "fraction of the training split per class used to pick the best epoch (0: use test)",
    "skip_bad": "skip unreadable images and report how many", "epochs": "passes over the training split",
    "batch_size": "images per step", "early_stop": "stop after N epochs without a better val accuracy",
    "optimizer": "sgd (Nesterov momentum) or adamw", "lr": "peak learning rate", "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum", "weight_decay": "L2 penalty (decoupled for adamw)",
    "decay_bn_and_bias": "also decay BN and bias parameters", "schedule": "constant, step, cosine or onecycle",
    "warmup_epochs": "linear warm-up length (cosine, onecycle)", "step_size": "step schedule: epochs per decay",
    "gamma": "step schedule: decay factor", "label_smoothing": "label smoothing of the cross-entropy",
    "grad_clip": "clip the global gradient norm (0: off)", "device": "auto, cpu or cuda",
    "precision": "auto, fp32, bf16 or fp16 (auto: bf16 where the hardware is native, else fp32; fp16 is "
    "emulated on CPUs)",
    "seed": "random seed (same seed, same machine: identical weights)", "out": "run folder",
    "checkpoint_every": "also checkpoint every N steps", "log_every": "steps between metric lines",
    "quiet": "no progress bar", "model_kwargs": "model switches, e.g. bn=false kernel_size=7 activation=sigmoid",
}


class _Parser(argparse.ArgumentParser):
    """argparse, but a wrong option is one line on stderr and exit status 2."""

    def error(self, message: str) -> None:
        raise CnnlabError(f"{message} (see `{self.prog} --help`)")


def parse_kwargs(items: list[str]) -> dict:
    """['bn=false', 'kernel_size=7', 'width=0.5'] -> {'bn': False, 'kernel_size': 7, 'width': 0.5}"""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise CnnlabError(f"--model-kwargs: expected key=value, got '{item}'")
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
    from .train import TrainConfig

    p.add_argument("--config", type=Path, help="YAML file of settings; options given here override it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not dataclasses.MISSING else None
        kw = {"dest": f.name, "default": argparse.SUPPRESS, "help": HELP.get(f.name)}
        if f.name == "model_kwargs":
            p.add_argument(flag, nargs="+", metavar="KEY=VALUE", **kw)
        elif f.name == "quiet":
            p.add_argument("-q", flag, action="store_true", **kw)
        elif isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            kind = {"image_size": int, "out": str, "recipe": str, "model_config": str}.get(f.name, type(default))
            p.add_argument(flag, type=kind, metavar=f.name.upper(), **kw)


def cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    values = {k: v for k, v in vars(args).items() if k not in ("command", "func", "config", "resume", "argv")}
    if "model_kwargs" in values:
        values["model_kwargs"] = parse_kwargs(values["model_kwargs"])
    base = TrainConfig.from_yaml(args.config).to_dict() if args.config else {}
    cfg = TrainConfig.from_dict({**base, **values}, "options")
    if args.resume and not cfg.out:
        raise CnnlabError("--resume needs --out, the folder of the run to continue")
    s = train(cfg, resume=args.resume)
    if not cfg.quiet and os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 reports
        print(f"\n{s['model']} on {s['dataset']} ({s['image_size']}): {s['params']:,} params, "
              f"{s['macs'] / 1e6:.1f}M MACs per image, {s['precision']} on {s['device']} x{s['threads']}")
        print(f"  {s['epochs']} epochs in {s['train_seconds']:.1f}s ({s['images_per_second']:.0f} img/s)")
        print(f"  best val accuracy {s['best_val_accuracy']:.4f} (epoch {s['best_epoch']})")
        print(f"  test accuracy     {s['test_accuracy']:.4f}  (top-5 {s['test_top5_accuracy']:.4f})")
        for note in s["notes"]:
            print(f"  note: {note}")
        for d in s["diagnoses"] or []:
            print(f"  diagnosis at step {d['step']}: {d['kind']} ({d['evidence']}); `cnnlab diagnose` explains")
        print(f"  run folder: {s['run_dir']}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from .inference import evaluate_run

    r = evaluate_run(args.checkpoint, args.data, weights=args.weights, holdout=args.holdout)
    if args.json:
        print(json.dumps(r))
        return 0
    print(f"{r['model']} on {r['dataset']} test split ({r['count']} images): accuracy {r['accuracy']:.4f}, "
          f"top-5 {r['top5_accuracy']:.4f}")
    width = max(len(c) for c in r["classes"])
    for c, acc in zip(r["classes"], r["per_class_accuracy"]):
        print(f"  {c:<{width}}  {acc:.4f}")
    print("confusion matrix (rows: true class, columns: predicted):")
    for row in r["confusion_matrix"]:
        print("  " + " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .inference import predict_images

    results = predict_images(args.checkpoint, args.images, top_k=args.top_k, weights=args.weights)
    if args.json:
        print(json.dumps(results))
        return 0
    for r in results:
        print(r["image"] + ": " + ", ".join(f"{p['class']} {p['probability']:.3f}" for p in r["top"]))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    import torch

    from .models import create_model, list_models, model_family, model_switches

    rows = []
    for name in list_models():
        with torch.device("meta"):  # shapes only: counting VGG-19's parameters needs no memory
            params = sum(p.numel() for p in create_model(name).parameters())
        switches = model_switches(name)
        rows.append({"name": name, "family": model_family(name), "params": params,
                     "num_classes": switches["num_classes"],
                     "switches": {k: v for k, v in switches.items() if k not in ("num_classes", "in_channels")}})
    if args.json:
        print(json.dumps(rows))
        return 0
    print(f"{'model':<12} {'family':<14} {'params':>13}  switches (defaults)")
    for r in rows:
        sw = " ".join(f"{k}={v}" for k, v in r["switches"].items())
        print(f"{r['name']:<12} {r['family']:<14} {r['params']:>13,}  {sw}   ({r['num_classes']} classes)")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from .models import create_model
    from .models.equivariant import equivariance_note
    from .report.summary import format_summary, measure_latency_ms, parse_input_shape, summarize

    shape = parse_input_shape(args.input)
    model = create_model(args.model, num_classes=args.classes, in_channels=shape[0],
                         **parse_kwargs(args.model_kwargs or []))
    s = summarize(model, shape, args.model)
    latency = {}
    if args.latency:  # what `cnnlab search --max-latency` compares against
        latency = {"latency_ms": round(measure_latency_ms(model, shape, args.device, args.precision), 4),
                   "latency_batch": 1}
    if args.json:
        print(json.dumps({"model": args.model, **s.to_dict(), **latency}))
    else:
        print(format_summary(s, args.model))
        if latency:
            print(f"latency {latency['latency_ms']:.3f} ms per image at batch 1, measured here "
                  f"(--device {args.device}, --precision {args.precision})")
    note = equivariance_note(model, shape[1], shape[0], args.model) if shape[1] == shape[2] else None
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
                       image_size=args.image_size)
    print(f"{out}: first row original, {args.rows - 1} rows augmented by '{args.policy}'")
    return 0


def cmd_invariance(args: argparse.Namespace) -> int:
    from .diagnose.invariance import measure_invariance

    names = [t.strip() for t in args.transforms.split(",") if t.strip()]
    result = measure_invariance(args.checkpoint, args.data, names, weights=args.weights, holdout=args.holdout)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{'transform':<12} {'predictions changed':>20} {'relative logit change':>22}")
    for name, r in result.items():
        print(f"{name:<12} {r['prediction_change']:>20.4f} {r['logit_change']:>22.2e}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from .studies import rotation

    studies = {"rotation": rotation}
    results = studies[args.name].run(args.out, epochs=args.epochs, seed=args.seed)
    print(studies[args.name].table(results))
    print(f"results, table and plot in {args.out}")
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from .search.report import report
    from .search.run import run_search

    objectives = tuple(o.strip() for o in args.objectives.split(","))
    run_search(args.space, args.data, args.trials, args.study, args.out, storage=args.storage, strategy=args.strategy,
               epochs=args.epochs, seed=args.seed, max_params=args.max_params, max_macs=args.max_macs,
               image_size=args.image_size, quiet=args.quiet, objectives=objectives, pruner=args.pruner,
               max_latency=args.max_latency, workers=args.workers)
    print(report(args.out, args.study, args.storage, as_json=args.json))
    return 0


def cmd_search_report(args: argparse.Namespace) -> int:
    from .search.report import report

    print(report(args.dir, args.study, args.storage, as_json=args.json))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="cnnlab", description="Build, train, diagnose and search CNNs for image classification.")
    parser.add_argument("--version", action="version", version=f"cnnlab {__import__('cnnlab').__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="train a model", description="Train a model with SGD and backpropagation.")
    _add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="evaluate a trained run on a data set's test split")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    p.add_argument("--data", required=True, help=HELP["data"])
    p.add_argument("--weights", choices=("best", "last"), default="best")
    p.add_argument("--holdout", type=float, default=0.2, help=HELP["holdout"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("predict", help="classify image files with a trained run")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    p.add_argument("images", nargs="+", type=Path, metavar="IMAGE")
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--weights", choices=("best", "last"), default="best")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("summary", help="per-layer shapes, parameters, MACs and receptive fields")
    p.add_argument("model")
    p.add_argument("--input", default="3x32x32", help="CxHxW (default 3x32x32)")
    p.add_argument("--classes", type=int, default=None, help="number of classes (default: the model's)")
    p.add_argument("--model-kwargs", nargs="+", metavar="KEY=VALUE", help=HELP["model_kwargs"])
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--latency", action="store_true", help="also measure inference latency at batch 1 here")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"), help="for --latency")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"), help="for --latency")
    p.set_defaults(func=cmd_summary)

    p = sub.add_parser("augment", help="a grid of augmented training images: what the model sees")
    p.add_argument("--data", default="digits", help=HELP["data"])
    p.add_argument("--policy", required=True, help=HELP["augment"])
    p.add_argument("--out", required=True, type=Path, help="the grid image (.png or .jpg)")
    p.add_argument("--rows", type=int, default=4, help="rows: the originals, then augmented draws")
    p.add_argument("--cols", type=int, default=8, help="images per row")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=None, help=HELP["image_size"])
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("invariance", help="how much a trained model's predictions change under transforms")
    p.add_argument("--checkpoint", required=True, type=Path, help="run folder written by `cnnlab train --out`")
    p.add_argument("--data", required=True, help=HELP["data"])
    p.add_argument("--transforms", default="rot90,rot180,hflip,rot15,translate2",
                   help="comma-separated: rotD (rot90, rot15, ...), hflip, vflip, translateN")
    p.add_argument("--weights", choices=("best", "last"), default="best")
    p.add_argument("--holdout", type=float, default=0.2, help=HELP["holdout"])
    p.add_argument("--json", action="store_true", help="one object keyed by transform")
    p.set_defaults(func=cmd_invariance)

    p = sub.add_parser("study", help="run a measured study of the CNN playbook, with a table and a plot")
    p.add_argument("name", choices=["rotation"], help="rotation: P4 CNN against augmentation on rotated digits")
    p.add_argument("--out", required=True, type=Path, help="folder for the runs, results.json, table.md, plot")
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_study)

    from .search import PRUNERS, STRATEGIES

    p = sub.add_parser("search", help="architecture search (`cnnlab search report DIR` shows the results)")
    p.add_argument("--space", required=True, help="a ready space (vgg-like, resnet-like, mixed) or a YAML file")
    p.add_argument("--data", default="digits", help=HELP["data"])
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
    p.add_argument("--workers", type=int, default=1, help="processes on this machine sharing the study")
    p.add_argument("--epochs", type=int, default=3, help="training epochs per trial")
    p.add_argument("--max-params", type=int, help="reject larger architectures before training")
    p.add_argument("--max-macs", type=int, help="reject architectures with more multiply-adds")
    p.add_argument("--max-latency", type=float, help="reject architectures slower than this many ms per image "
                   "(batch 1, measured here before training)")
    p.add_argument("--image-size", type=int, default=None, help=HELP["image_size"])
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
        args = build_parser().parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
