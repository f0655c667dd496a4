"""Using a trained run: rebuild its model from `model.json`, load its weights, evaluate or predict. Every file
of the run is read through `RunFolder`, which checks what it reads."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .data import DATASETS, ImageDataset, data_location, decode_image, load_dataset, refuse_ignored_holdout
from .errors import CnnlabError
from .text import plural
from .train.run_folder import RunFolder
from .runtime.evaluate import metrics_from_logits, predict_logits
from .runtime.memory import create_model_within_memory, ensure_fits
from .runtime.tensors import to_device

CPU = torch.device("cpu")


def load_run(run_dir: Path, weights: str | None = "best",
             option: str = "--checkpoint") -> tuple[torch.nn.Module, dict]:
    """The run's model, in eval mode, with its `weights` (best or last; None: as initialised) loaded, and its
    model.json. A model that would not fit in memory is refused before it is built."""
    folder = RunFolder(run_dir).require(option)
    spec = folder.read_spec()
    model = create_model_within_memory(spec["model"], CPU, num_classes=spec["num_classes"],
                                       in_channels=spec["in_channels"], **spec["model_kwargs"])
    minimum = getattr(model, "min_input_size", 1)
    if spec["image_size"] < minimum:
        raise CnnlabError(f"{folder.spec}: image_size {spec['image_size']} is below {spec['model']}'s minimum input "
                          f"of {minimum}x{minimum}")
    if weights:
        folder.load_weights(model, weights)
    return model.eval(), spec


def stats(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(spec["mean"]).view(1, -1, 1, 1), torch.tensor(spec["std"]).view(1, -1, 1, 1)


def _precision(spec: dict) -> str:
    """The precision the run was evaluated in, so eval reproduces its figures; fp16 exists only on CUDA."""
    return "fp32" if spec.get("precision") == "fp16" else spec.get("precision", "fp32")


@dataclass
class EvalSplit:
    """A test split as a run's model sees it: uint8 images at its image size, and what they were read from."""
    dataset: ImageDataset
    x: torch.Tensor
    y: torch.Tensor
    data: str  # a registered name, or the path read
    holdout: float | int
    run_split: bool  # exactly the split the run was tested on when it trained


def load_test_split(run_dir: Path, spec: dict, data: str | None = None, holdout: float | int | None = None
                    ) -> EvalSplit:
    """By default the run's own test split: its data, holdout, image size and skip_bad, as the trainer read
    them. `data` evaluates another data set (whose classes must be the run's), `holdout` another split; either
    defaults to the run's."""
    folder = RunFolder(run_dir)
    run = folder.read_data()
    source = data_location(run["data"] if data is None else data)
    own = source == data_location(run["data"])
    asked = holdout
    holdout = run["holdout"] if holdout is None else holdout
    if data is None and source not in DATASETS and not Path(source).exists():
        raise CnnlabError(f"{folder}: the data it trained on, {source}, is not here; give --data where it is now")
    ds = load_dataset(source, holdout=holdout, image_size=run["image_size"] if own else spec["image_size"],
                      skip_bad=run["skip_bad"] if own else False)
    if asked is not None:
        refuse_ignored_holdout(ds, asked, source)
    check_classes(ds, spec, f"--data {data}" if data is not None else f"the run's data {source}")
    size = spec["image_size"]
    ensure_fits(len(ds.test_y) * ds.channels * size * size, CPU, f"the test split at image size {size}")
    x, y = to_device(ds.test_x, ds.test_y, size, CPU)
    return EvalSplit(ds, x, y, source, holdout, own and holdout == run["holdout"])


def check_classes(ds: ImageDataset, spec: dict, what: str) -> None:
    """Refuse, naming the first class that differs, a data set whose channels or classes (names and order) are
    not the run's: its labels would mean other classes."""
    if ds.channels != spec["in_channels"]:
        raise CnnlabError(f"{what}: {ds.channels}-channel images, but the model was trained on "
                          f"{plural(spec['in_channels'], 'channel')}")
    theirs, ours = list(ds.classes), spec["classes"]
    if theirs == ours:
        return
    i = next((i for i, (a, b) in enumerate(zip(theirs, ours)) if a != b), min(len(theirs), len(ours)))
    if i < min(len(theirs), len(ours)):
        why = f"class {i + 1} is '{theirs[i]}' where the run's is '{ours[i]}'"
    elif len(theirs) < len(ours):
        why = f"it has {plural(len(theirs), 'class')}, the run {len(ours)}: it lacks the run's class '{ours[i]}'"
    else:
        why = f"it has {plural(len(theirs), 'class')}, the run {len(ours)}: class '{theirs[i]}' is not the run's"
    raise CnnlabError(f"{what}: its classes are not the run's ({why})")


def evaluate_run(run_dir: Path, data: str | None = None, weights: str = "best",
                 holdout: float | int | None = None) -> dict:
    """Accuracy, per-class accuracy and confusion matrix on the run's own test split (or on `data`, `holdout`);
    `data`, `holdout` and `run_split` say what was evaluated."""
    model, spec = load_run(run_dir, weights)
    split = load_test_split(run_dir, spec, data, holdout)
    mean, std = stats(spec)
    logits = predict_logits(model, split.x, mean, std, _precision(spec), tta=spec.get("tta", 0))
    return {"model": spec["model"], "dataset": split.dataset.name, "classes": split.dataset.classes,
            "data": split.data, "holdout": split.holdout, "run_split": split.run_split,
            **metrics_from_logits(logits, split.y, split.dataset.num_classes)}


def image_files(paths: list[Path]) -> list[Path]:
    """The files as given, each folder replaced by the image files below it (recursively, in name order); a
    folder without any stays as it is, to be reported when read."""
    from .data.folder import IMAGE_EXTENSIONS

    files = []
    for path in map(Path, paths):
        found = sorted(f for f in path.rglob("*") if f.suffix.lower() in IMAGE_EXTENSIONS and f.is_file()) \
            if path.is_dir() else []
        files.extend(found or [path])
    return files


def read_image(path: Path, channels: int) -> np.ndarray:
    """(H, W, channels) uint8, decoded as the data loaders decode (`cnnlab.data.decode_image`: upright by its
    EXIF orientation, 16-bit scaled, transparency composited, decompression bombs refused), then made grey
    (ITU-R 601 luma, as Pillow's "L") or colour to match the model; CnnlabError if unreadable."""
    if Path(path).is_dir():
        raise CnnlabError(f"{path}: a folder with no image files")
    pixels = decode_image(Path(path), str(path))
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if channels == 3 and pixels.shape[2] == 1:
        return np.repeat(pixels, 3, axis=2)
    if channels == 1 and pixels.shape[2] == 3:
        from PIL import Image

        return np.asarray(Image.fromarray(pixels).convert("L"), dtype=np.uint8)[..., None]
    return pixels


def predict_images(run_dir: Path, paths: list[Path], top_k: int = 5, weights: str = "best") -> list[dict]:
    """One result per image file, folders expanded (`image_files`): {"image", "top": [{"class", "probability"},
    ...]}, or {"image", "error"} for a file that cannot be read; the others are predicted all the same."""
    model, spec = load_run(run_dir, weights)
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {top_k}")
    results, batch = [], []
    for path in image_files(paths):
        try:
            img = read_image(path, spec["in_channels"])
        except CnnlabError as exc:
            results.append({"image": str(path), "error": str(exc)})
            continue
        batch.append((len(results), to_device(img[None], np.zeros(1), spec["image_size"], CPU)[0]))
        results.append({"image": str(path)})
    if batch:
        mean, std = stats(spec)
        x = torch.cat([b[1] for b in batch])
        probs = predict_logits(model, x, mean, std, _precision(spec), tta=spec.get("tta", 0)).softmax(1)
        top = probs.topk(min(top_k, probs.shape[1]))
        for (k, _), values, indices in zip(batch, top.values, top.indices):
            results[k]["top"] = [{"class": spec["classes"][i], "probability": float(p)}
                                 for p, i in zip(values, indices)]
    return results
