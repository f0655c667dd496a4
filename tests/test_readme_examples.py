"""Every command-line example of README.md and docs/*.md runs and exits 0, so that none can drift.

An example is an indented line (a Markdown code block, outside ``` fences) that starts with `cnnlab`. The
examples of one file run in order, in one fresh folder that stands for the repository root (later examples
read the run folders of earlier ones), through `cnnlab.cli.main` in this process. Each runs with a short
budget; the rewrites below change how long an example trains, never which command, model, data format or
options it exercises:

| written | run as | why the meaning holds |
|---|---|---|
| `train` (any `--epochs`, or the default 15) | `--epochs 1` | one epoch runs every step of the loop, the evaluation, the checkpoints and the summary |
| `train --resume ... --epochs N` | `--epochs 2` | still larger than the (rewritten) 1 epoch trained, so the run is extended |
| `train`/`search` on digits | `--image-size 8` | digits' own resolution; the default 32 only upscales it |
| `search --trials N`, `--epochs N` | `--trials 1 --epochs 1`, and `--max-macs 2000000` | a search that rejects what does not fit and trains what does, writes the study and the report |
| `study NAME`, `tour` | `--budget tiny` (one seed, one epoch at 8x8) | the same contenders, measures, table, plots, report and verdict |
| `--data ../shared/data/cifar10-train-jpeg.tar.gz` | an archive of the same layout (`cifar10/train/<class>/NNNN.jpg`, 32x32 JPEGs) with the first 12 images of each class of the real one, or, where `../shared/data` is absent, 12 digits per class drawn as 32x32 JPEGs | the same format, loader, classes and split rules |
| `--holdout 1000` (a count per class) | `--holdout 2` | still a whole count per class |
| `predict ... cat.png dog.jpg photos/` | those files made from digits images | they stand for the reader's own images |

Not run, each for a listed reason (see NOT_RUN): the set-up `pip` commands, `python benchmarks/...` and
`torchrun` lines; they are not `cnnlab` lines, and `test_every_command_line_is_run_or_excused` checks that
no other kind of command line appears in the docs unaccounted for.
"""
from __future__ import annotations

import functools
import io
import os
import re
import shlex
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnlab.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHARED_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-train-jpeg.tar.gz"
PER_CLASS = 12

NOT_RUN = {  # how an indented command line starts -> why this test does not run it
    "pip ": "the set-up commands: installing is what runs this test",
    "python -m pytest": "the test suite itself",
    "python benchmarks/": "benchmarks take minutes to hours and measure the machine; they are run by hand",
    "torchrun ": "distributed launches are covered by tests/train/test_distributed.py (2 CPU processes)",
    "cnnlab: ": "not a command: a line cnnlab prints, shown as output",
}


def code_lines(path: Path) -> list[str]:
    """The lines of a Markdown file's indented code blocks (4 spaces, after a blank line; not a paragraph's
    indented continuation), outside ``` fences."""
    lines, fenced, previous, in_code = [], False, "", False
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith("    ") and line.strip() and (in_code or not previous.strip()):
            lines.append(line.strip())
            in_code = True
        elif line.strip():
            in_code = False
        previous = line
    return lines


def examples(path: Path) -> list[list[str]]:
    return [shlex.split(line, comments=True) for line in code_lines(path) if line.startswith("cnnlab ")]


def _set(argv: list[str], option: str, value: str) -> None:
    if option in argv:
        argv[argv.index(option) + 1] = value
    else:
        argv += [option, value]


def shorten(argv: list[str]) -> list[str]:
    """The example with the short budget of the module's table."""
    argv = list(argv)
    command = argv[0]
    data = argv[argv.index("--data") + 1] if "--data" in argv else "digits"
    if "--holdout" in argv and float(argv[argv.index("--holdout") + 1]) >= 1:
        _set(argv, "--holdout", "2")
    if command == "train":
        if "--resume" in argv:
            if "--epochs" in argv:
                _set(argv, "--epochs", "2")
        else:
            _set(argv, "--epochs", "1")
            if data == "digits" and "--config" not in argv:
                _set(argv, "--image-size", "8")
    elif command == "search" and argv[1:2] != ["report"]:
        _set(argv, "--trials", "1")
        _set(argv, "--epochs", "1")
        _set(argv, "--max-macs", "2000000")
        if data == "digits":
            _set(argv, "--image-size", "8")
    elif command in ("study", "tour"):
        _set(argv, "--budget", "tiny")  # one seed, one epoch at 8x8: every contender trains, verdict computed
    return argv


@functools.lru_cache(maxsize=1)
def small_archive() -> bytes:
    """A .tar.gz of the CIFAR-10 archive's layout: the first PER_CLASS images of each class of the real one, or
    digits drawn as 32x32 RGB JPEGs where the real one is absent."""
    members: dict[str, bytes] = {}
    if SHARED_ARCHIVE.exists():
        counts: dict[str, int] = {}
        with tarfile.open(SHARED_ARCHIVE, "r|gz") as tar:
            for m in tar:
                if not m.isfile():
                    continue
                cls = m.name.rsplit("/", 2)[-2]
                if counts.get(cls, 0) < PER_CLASS:
                    counts[cls] = counts.get(cls, 0) + 1
                    members[m.name] = tar.extractfile(m).read()
    else:
        from sklearn.datasets import load_digits

        digits = load_digits()
        for label in range(10):
            for i, image in enumerate(digits.images[digits.target == label][:PER_CLASS]):
                pixels = np.repeat((image * 255 / 16).astype(np.uint8), 4, 0).repeat(4, 1)
                buf = io.BytesIO()
                Image.fromarray(pixels).convert("RGB").save(buf, "JPEG")
                members[f"cifar10/train/{label}/{i:04d}.jpg"] = buf.getvalue()
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, body in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def provide_inputs(argv: list[str], cwd: Path) -> set[str]:
    """Files an example reads that stand for the reader's own: the shared archive, the images to predict.
    Returns the names made in `cwd`."""
    made = set()
    for arg in argv:
        if arg.startswith("../shared/data/"):
            path = cwd / arg
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(small_archive())
    if argv[0] == "predict":
        from sklearn.datasets import load_digits

        images = iter(load_digits().images)
        for arg in argv[1:]:
            if re.fullmatch(r"[\w.-]+\.(png|jpg)", arg) or arg.endswith("/") and not (cwd / arg).exists():
                targets = [cwd / arg] if not arg.endswith("/") else [cwd / arg / f"{i}.png" for i in range(3)]
                for target in targets:
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray((next(images) * 255 / 16).astype(np.uint8)).save(target)
                made.add(arg.rstrip("/"))
    return made


def test_every_command_line_is_run_or_excused():
    for path in DOCS:
        for line in code_lines(path):
            assert line.startswith(("cnnlab ", *NOT_RUN)), f"{path.name}: a code line neither run nor excused: {line}"


def test_the_readme_shows_examples_and_links_its_docs():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.encode()) < 8 * 1024
    assert len(examples(ROOT / "README.md")) >= 10
    for link in re.findall(r"\]\((docs/[\w-]+\.md)", readme):
        assert (ROOT / link).exists() or link in ("docs/studies.md", "docs/export.md"), link


@pytest.mark.parametrize("doc", [p for p in DOCS if examples(p)], ids=lambda p: p.name)
def test_examples_run_as_written(doc, tmp_path, monkeypatch, capsys):
    cwd = tmp_path / "repo"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    made = set()
    for written in examples(doc):
        argv = shorten(written[1:])
        made |= provide_inputs(argv, cwd)
        start = time.perf_counter()
        try:
            code = main(argv)
        except SystemExit as exc:  # --help
            code = exc.code
        out, err = capsys.readouterr()
        if os.environ.get("CNNLAB_EXAMPLE_TIMES"):  # how long each example takes: where to shorten
            with capsys.disabled():
                print(f"\n{time.perf_counter() - start:6.1f} s  cnnlab {shlex.join(argv)}", end="")
        assert code == 0, (f"{doc.name}: `{shlex.join(written)}` (run as `cnnlab {shlex.join(argv)}`) exited "
                           f"{code}:\n{out[-2000:]}\n{err[-2000:]}")
    left = {p.name for p in cwd.iterdir()} - made - {"runs"}
    assert not left, f"{doc.name}: examples wrote outside runs/: {sorted(left)}"
