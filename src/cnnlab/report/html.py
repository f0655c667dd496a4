"""`cnnlab report DIR`: one self-contained `report.html` for any folder cnnlab writes: a run, a search, a study
or a tour. Images are inline (base64 PNG), the style is inline, and nothing is requested from the network, so
the page opens from a file anywhere. A run is read only through `RunFolder`."""
from __future__ import annotations

import base64
import functools
import html
import io
import json
import math
import re
import warnings
from pathlib import Path
from typing import Callable

from ..errors import CnnlabError
from ..runtime.files import read_text_capped
from ..train.run_folder import RunFolder

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto;display:block;margin:.5em 0}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}
.verdict{display:inline-block;padding:.3em .8em;border-radius:4px;font-weight:bold;font-size:1.1em}
.supported{background:#d9f2d9;color:#155d15}.not-supported{background:#f8d7d7;color:#7a1616}
.inconclusive{background:#fff1c2;color:#6b5200}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:.85em}
.muted{color:#666;font-size:.9em}
"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def png(source) -> str:
    """An <img> with the PNG inline: from a matplotlib figure or a PNG file."""
    if isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
    else:
        buf = io.BytesIO()
        source.savefig(buf, format="png", dpi=100)
        import matplotlib.pyplot as plt

        plt.close(source)
        data = buf.getvalue()
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def figure(source, caption: str = "") -> str:
    return f"<figure>{png(source)}<figcaption>{esc(caption)}</figcaption></figure>"


def rows(header: list[str], body: list[list]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    lines = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in body)
    return f"<table><tr>{head}</tr>{lines}</table>"


def page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>'
            f"<style>{STYLE}</style></head><body>{body}"
            f'<p class="muted">written by cnnlab {esc(__import__("cnnlab").__version__)}</p></body></html>')


# the file that marks each kind of folder cnnlab writes, in the order kind_of tries them
MARKERS = {"tour": "tour.json", "study": "results.json", "search": "study.db", "run": "model.json"}


def kind_of(folder: Path) -> str:
    folder = Path(folder)
    has = {kind: (folder / marker).is_file() for kind, marker in MARKERS.items()}
    if has["tour"]:
        return "tour"
    if has["study"]:
        results_file = folder / MARKERS["study"]
        try:
            results = json.loads(read_text_capped(results_file))
        except (ValueError, OSError):
            raise CnnlabError(f"{results_file}: not valid JSON") from None
        if isinstance(results, dict) and "claim" in results:
            return "study"
        if not has["search"] and not has["run"]:
            raise CnnlabError(f"{results_file}: not what cnnlab writes (no study's claim)")
    for kind in ("search", "run"):
        if has[kind]:
            return kind
    *names, last = reversed(MARKERS.values())
    raise CnnlabError(f"{folder}: not a folder cnnlab wrote (no {', '.join(names)} or {last})")


def refuse_other_kind(out: Path, kind: str) -> None:
    """--out for a `kind` of folder must not hold another kind (its report would be overwritten, and the
    folder read as the new kind from then on)."""
    for other, marker in MARKERS.items():
        if other != kind and (Path(out) / marker).exists():
            raise CnnlabError(f"--out {out}: holds a cnnlab {other} ({marker}); choose another folder")


def write_report(folder: Path, study: str | None = None, storage: str | None = None) -> Path:
    """`study`, `storage`: a search whose trials live in a database other than `folder/study.db`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CnnlabError(f"{folder}: no such folder")
    if storage is not None:
        text = search_page(folder, study, storage)
    else:
        kind = kind_of(folder)
        text = {"run": run_page, "search": search_page, "study": study_page, "tour": tour_page}[kind](folder)
    from ..runtime.files import atomic_write_text

    out = folder / "report.html"
    atomic_write_text(out, text)  # a reader never opens half a page
    return out


# ---- a study ------------------------------------------------------------------------------------------------
def _verdict(v: str) -> str:
    return f'<span class="verdict {v.replace(" ", "-")}">{esc(v)}</span>'


def _written_by_cnnlab(name: str) -> Callable[[Callable[[Path], str]], Callable[[Path], str]]:
    """A page drawn from `name`, a JSON file of cnnlab's own (results.json, tour.json), read back as untrusted:
    a file that is not what cnnlab writes is one line naming it, not a traceback from wherever a value is used."""
    def decorate(render: Callable[[Path], str]) -> Callable[[Path], str]:
        @functools.wraps(render)
        def checked(folder: Path) -> str:
            try:
                return render(folder)
            except CnnlabError:
                raise
            except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError) as exc:
                raise CnnlabError(f"{Path(folder) / name}: not what cnnlab writes ({exc.__class__.__name__}: "
                                  f"{str(exc)[:80]})") from None
        return checked
    return decorate


@_written_by_cnnlab("results.json")
def study_page(folder: Path) -> str:
    from ..studies.harness import fmt

    r = json.loads(read_text_capped(folder / "results.json"))
    ms = r["measures"]
    body = [f"<h1>Study: {esc(r['study'])}</h1>", f"<p><b>Claim:</b> {esc(r['claim'])}.</p>",
            f"<p class='muted'>Reference: {esc(r['reference'])}</p>", f"<p>{esc(r.get('notes', ''))}</p>",
            f"<h2>Verdict</h2><p>{_verdict(r['verdict'])} at the <b>{esc(r['budget'])}</b> budget, "
            f"{len(r['seeds'])} seed(s) per contender.</p><ul>"
            + "".join(f"<li>{esc(t)}</li>" for t in r["evidence_text"]) + "</ul>",
            "<p class='muted'>Supported: the difference of the means favours the claim by more than the spread of "
            "the seeds, sqrt(sd_a² + sd_b²); not supported: it goes against the claim by more than that; "
            "inconclusive: within it, or one seed only.</p>"]
    header = ["contender"] + [ms[c]["label"] for c in r["columns"]]
    table = [[label] + [fmt(c["mean"].get(k), ms[k]["percent"], c["sd"].get(k) if len(c["runs"]) > 1 else None)
                        for k in r["columns"]] for label, c in r["contenders"].items()]
    body.append("<h2>Results (mean ± standard deviation over seeds)</h2>" + rows(header, table))
    for name, values in (r.get("derived") or {}).items():
        body.append(f"<p><b>{esc(name)}:</b> " + esc(", ".join(f"{k}: {v}" for k, v in values.items())) + "</p>")
    body.append("<h2>Plots</h2>")
    for p in r.get("plots", []):
        if not re.fullmatch(r"[\w-]+\.png", p["file"]):  # a path elsewhere would put that file in the page
            raise CnnlabError(f"{folder / 'results.json'}: plot '{str(p['file'])[:60]}' is not a PNG of the "
                              f"study's folder")
        if (folder / p["file"]).is_file():
            body.append(figure(folder / p["file"], p["caption"]))
    body.append("<h2>Contenders</h2><p>Each over the base settings "
                f"<code>{esc(json.dumps(r['base_settings']))}</code>:</p>")
    body.append(rows(["contender", "settings", "runs (seed: status, diagnoses)"],
                     [[label, json.dumps(c["overrides"]),
                       "; ".join(f"{x['seed']}: {x['status']}" + (f" ({', '.join(x['diagnoses'])})"
                                                                   if x["diagnoses"] else "") for x in c["runs"])]
                      for label, c in r["contenders"].items()]))
    body.append(f"<p class='muted'>Per-seed figures: results.json; runs in runs/. {r.get('seconds', 0)} s in all.</p>")
    return page(f"cnnlab study {r['study']}", "".join(body))


# ---- a tour ---------------------------------------------------------------------------------------------------
@_written_by_cnnlab("tour.json")
def tour_page(folder: Path) -> str:
    t = json.loads(read_text_capped(folder / "tour.json"))
    table = "".join(f"<tr><td><a href=\"{esc(s['name'])}/report.html\">{esc(s['name'])}</a></td>"
                    f"<td>{esc(s['claim'])}</td><td>{_verdict(s['verdict'])}</td><td>{s['seconds']:.0f}</td></tr>"
                    for s in t["studies"])
    body = (f"<h1>The CNN playbook, measured</h1><p>Every study at the <b>{esc(t['budget'])}</b> budget, "
            f"{esc(str(t['seeds']))} seed(s) each, {t['seconds'] / 60:.1f} min in all. Each verdict is computed "
            f"from the measurements; follow a study's name for its evidence.</p>"
            f"<table><tr><th>study</th><th>claim</th><th>verdict</th><th>seconds</th></tr>{table}</table>")
    return page("cnnlab tour", body)


# ---- a search ------------------------------------------------------------------------------------------------
def search_page(folder: Path, study: str | None = None, storage: str | None = None) -> str:
    from ..search.report import load_results, write_outputs

    res = load_results(folder, study, storage)
    files = write_outputs(res, folder)
    board = [[r["trial"], f"{r['val_accuracy']:.2%}", f"{r['params']:,}", f"{r['macs']:,}",
              f"{r['train_seconds']:.1f}", ("* " if r["pareto"] else "") + r["architecture"]]
             for r in res["leaderboard"]]
    body = [f"<h1>Search: {esc(res['study'])}</h1>",
            f"<p>{res['trials']} trials, {len(res['leaderboard'])} trained, {len(res['rejected'])} rejected before "
            f"training, {len(res['pruned'])} pruned, {len(res['failed'])} diverged.</p><h2>Leaderboard</h2>",
            rows(["trial", "val accuracy", "params", "MACs", "train s", "architecture (*: Pareto front)"], board)]
    if files.get("pareto_plot"):
        body.append(figure(files["pareto_plot"], f"Validation accuracy against {res['pareto_against']}; red: the "
                           "Pareto front."))
    importances = _importances(storage or f"sqlite:///{(folder / 'study.db').resolve()}", res["study"])
    if importances:
        body.append("<h2>Parameter importances</h2>" + rows(["choice", "importance"],
                                                            [[k, f"{v:.3f}"] for k, v in importances.items()]))
    if res["leaderboard"]:
        best = res["leaderboard"][0]
        body.append(f"<h2>Best architecture (trial {best['trial']})</h2>" + figure(arch_diagram(best["arch"]),
                    best["architecture"]) + f"<pre>{esc(json.dumps(best['arch'], indent=1))}</pre>")
    for r in res["rejected"]:
        body.append(f"<p class='muted'>rejected #{r['trial']}: {esc(r['reason'])}</p>")
    return page(f"cnnlab search {res['study']}", "".join(body))


def _importances(storage: str, name: str) -> dict:
    import optuna

    try:
        study = optuna.load_study(study_name=name, storage=storage)
        with warnings.catch_warnings():  # "some regimes have fewer than 2 trials": a small search, said below
            warnings.simplefilter("ignore")
            return dict(optuna.importance.get_param_importances(study))
    except (RuntimeError, ValueError):  # fewer than two finished trials, or nothing varied
        return {}


def arch_diagram(arch: dict):
    """The `cnn` architecture drawn left to right: input, stem, each stage (blocks x conv k x k, width), the
    downsampling between stages, the head."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    boxes = [("input", "#eeeeee")]
    stages = arch["stages"]
    boxes.append((f"stem\nconv {stages[0].get('kernel', 3)}x{stages[0].get('kernel', 3)}\n{stages[0]['width']} ch",
                  "#dde8f6"))
    for i, s in enumerate(stages):
        if i:
            boxes.append(("max-pool 2x2" if arch.get("downsample") == "pool" else "stride 2", "#f3e3c9"))
        skip = "residual" if arch.get("skip") else "plain"
        boxes.append((f"stage {i + 1}\n{s['blocks']} x {skip} block\nconv {s.get('kernel', 3)}x{s.get('kernel', 3)}"
                      f"\n{s['width']} ch", "#cfe8cf"))
    head = arch.get("head", {"type": "gap"})
    boxes.append(("global avg pool\n+ linear" if head.get("type", "gap") == "gap"
                  else "fc " + "-".join(map(str, head.get("widths", []))), "#f6d5d5"))
    fig, ax = plt.subplots(figsize=(max(6, 1.45 * len(boxes)), 2.4))
    for i, (text, colour) in enumerate(boxes):
        ax.add_patch(plt.Rectangle((i * 1.4, 0), 1.1, 1, fc=colour, ec="0.3"))
        ax.text(i * 1.4 + 0.55, 0.5, text, ha="center", va="center", fontsize=7)
        if i:
            ax.annotate("", (i * 1.4, 0.5), (i * 1.4 - 0.3, 0.5), arrowprops={"arrowstyle": "->"})
    ax.set_xlim(-0.1, len(boxes) * 1.4)
    ax.set_ylim(-0.1, 1.1)
    ax.axis("off")
    extras = f"batch norm {'on' if arch.get('bn') else 'off'}, {arch.get('activation', 'relu')}, " \
             f"padding {arch.get('padding', 'same')}, group {arch.get('group', 'none')}"
    ax.set_title(extras, fontsize=8)
    fig.tight_layout()
    return fig


# ---- a run ---------------------------------------------------------------------------------------------------
def run_page(path: Path) -> str:
    folder = RunFolder(path).require("report")
    spec, config = folder.read_spec(), folder.read_config()
    records = folder.read_metrics()
    summary = folder.read_summary() if folder.summary.exists() else {"status": "not finished"}
    body = [f"<h1>Run: {esc(path.name)}</h1>",
            f"<p><b>{esc(spec['model'])}</b> on <b>{esc(config.get('data'))}</b>, status {esc(summary['status'])}"
            + (f": test accuracy <b>{summary['test_accuracy']:.2%}</b> (best epoch {summary['best_epoch']} of "
               f"{summary['epochs']}), {summary['params']:,} parameters, {summary['train_seconds']:.1f} s of "
               f"training in {summary['precision']}" if summary.get("status") == "finished" else "") + ".</p>"]
    epochs = [r for r in records if r["type"] == "epoch"]
    if epochs:
        body.append("<h2>Learning curves</h2>" + figure(curves_figure(epochs), "Loss, accuracy and learning rate "
                                                        "per epoch."))
    if (folder.weights("best")).is_file():
        body.append(_test_section(folder, spec, config))
    body.append(_model_section(folder, spec))
    body.append(_health_section(records))
    body.append("<h2>Config</h2>" + rows(["setting", "value"], [[k, json.dumps(v)] for k, v in config.items()]))
    return page(f"cnnlab run {path.name}", "".join(body))


def curves_figure(epochs: list[dict]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    x = [e["epoch"] for e in epochs]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    marker = "o" if len(x) <= 30 else None
    axes[0].plot(x, [e["train_loss"] for e in epochs], marker=marker, ms=3, label="training")
    val = [(e["epoch"], e["val_loss"]) for e in epochs if "val_loss" in e]
    if val:
        axes[0].plot(*zip(*val), marker=marker, ms=3, label="validation")
    axes[0].set(title="loss", xlabel="epoch", ylabel="cross-entropy loss")
    axes[1].plot(x, [e["train_accuracy"] for e in epochs], marker=marker, ms=3, label="training")
    val = [(e["epoch"], e["val_accuracy"]) for e in epochs if "val_accuracy" in e]
    if val:
        axes[1].plot(*zip(*val), marker=marker, ms=3, label="validation")
    axes[1].set(title="accuracy", xlabel="epoch", ylabel="accuracy (%)")
    axes[1].yaxis.set_major_formatter(PercentFormatter(1.0))
    axes[2].plot(x, [e["lr"] for e in epochs], marker=marker, ms=3, color="C2", label="learning rate")
    axes[2].set(title="learning rate (at each epoch's end)", xlabel="epoch", ylabel="learning rate")
    for ax in axes:
        ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, frameon=False)
    fig.tight_layout()
    return fig


def _test_section(folder: RunFolder, spec: dict, config: dict) -> str:
    import torch

    from ..inference import load_test_split, stats
    from ..runtime.evaluate import metrics_from_logits, predict_logits
    from ..studies.harness import build_model
    from .confusion import confusion_figure

    model, _ = build_model(folder)
    try:
        split = load_test_split(folder.path, spec)  # the run's own test split
        ds, x, y = split.dataset, split.x, split.y
    except CnnlabError as exc:
        return f"<h2>Test set</h2><p>not evaluated: {esc(exc)}</p>"
    mean, std = stats(spec)
    logits = predict_logits(model, x, mean, std, "fp32", tta=config.get("tta", 0))
    m = metrics_from_logits(logits, y, ds.num_classes)
    classes = spec["classes"]
    out = [f"<h2>Test set</h2><p>{m['count']} images, accuracy <b>{m['accuracy']:.2%}</b> (these weights, fp32).</p>",
           figure(confusion_figure(m["confusion_matrix"], classes, "confusion matrix, test split"),
                  "Rows: true class; columns: predicted class; counts of test images."),
           "<h3>Per-class accuracy</h3>",
           rows(["class", "accuracy", "test images"],
                [[c, f"{a:.1%}", sum(row)] for c, a, row in zip(classes, m["per_class_accuracy"], m["confusion_matrix"])])]
    probs = logits.softmax(1)
    conf, pred = probs.max(1)
    wrong = torch.nonzero(pred != y).flatten()
    if len(wrong):
        order = wrong[conf[wrong].argsort(descending=True)][:16]
        out.append("<h3>The most confidently wrong test images</h3>" + figure(
            wrong_grid(x[order], [(classes[int(y[i])], classes[int(pred[i])], float(conf[i])) for i in order]),
            "Each with its true class, the predicted class and the model's probability for it."))
    return "".join(out)


def wrong_grid(images, captions: list[tuple[str, str, float]]):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(captions)
    cols = min(8, n)
    rows_ = math.ceil(n / cols)
    fig, axes = plt.subplots(rows_, cols, figsize=(1.6 * cols, 1.9 * rows_), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, img, (true, pred, p) in zip(axes.flat, images, captions):
        arr = img.permute(1, 2, 0).numpy()
        ax.imshow(arr[..., 0] if arr.shape[2] == 1 else arr, cmap="gray" if arr.shape[2] == 1 else None)
        ax.set_title(f"true {true[:10]}\npred {pred[:10]} ({p:.0%})", fontsize=7)
    fig.tight_layout()
    return fig


def _model_section(folder: RunFolder, spec: dict) -> str:
    from ..models.summary import summarize
    from ..studies.harness import build_model

    model, _ = build_model(folder, weights=None)
    try:
        s = summarize(model, (spec["in_channels"], spec["image_size"], spec["image_size"]))
    except Exception as exc:  # noqa: BLE001 - a model fx cannot trace: the report goes on without the table
        return f"<h2>Model</h2><p>no per-layer summary: {esc(exc)}</p>"
    body = [[r.name, r.type, "x".join(map(str, r.output)), f"{r.params:,}", f"{r.macs:,}",
             r.receptive_field if r.receptive_field is not None else "global"] for r in s.layers]
    return (f"<h2>Model</h2><p>{s.params:,} parameters, {s.macs:,} multiply-adds per image, receptive field "
            f"{s.receptive_field} pixels, input {'x'.join(map(str, s.input))}.</p>"
            + rows(["layer", "type", "output", "params", "MACs", "receptive field"], body))


def _health_section(records: list[dict]) -> str:
    from ..diagnose.report import grad_norm_figure

    samples = [r for r in records if r["type"] == "layers"]
    diagnoses = [r for r in records if r["type"] == "diagnosis"]
    out = ["<h2>Gradient health</h2>"]
    if samples:
        out.append(figure(grad_norm_figure({"samples": samples}), "log10 gradient norm per layer (input at the top), "
                          "a column per sampled step."))
    else:
        out.append("<p>no gradient samples (monitor off).</p>")
    if diagnoses:
        out.append(rows(["step", "diagnosis", "layers", "evidence", "remedies"],
                        [[d["step"], d["kind"], ", ".join(d.get("layers", [])[:4]), d.get("evidence", ""),
                          "; ".join(d.get("remedies", []))] for d in diagnoses]))
    else:
        out.append("<p>no diagnosis: gradients, updates and activations stayed within the thresholds.</p>")
    return "".join(out)
