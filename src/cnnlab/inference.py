"""Using a trained run: rebuild its model from `model.json`, load its weights, evaluate or predict."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .data import load_dataset
from .errors import CnnlabError
from .text import plural
from .models import create_model
from .train.checkpoint import load_weights
from .runtime.evaluate import metrics_from_logits, predict_logits
from .runtime.tensors import to_device


def read_run_spec(run_dir: Path, option: str = "--checkpoint") -> dict:
    """A run folder's model.json: model, model_kwargs, num_classes, in_channels, image_size, classes, ..."""
    spec_file = Path(run_dir) / "model.json"
    if not spec_file.exists():
        raise CnnlabError(f"{option} {run_dir}: not a cnnlab run folder (no model.json)")
    return json.loads(spec_file.read_text())


def load_run(run_dir: Path, weights: str = "best", option: str = "--checkpoint") -> tuple[torch.nn.Module, dict]:
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir, option)
    model = create_model(spec["model"], num_classes=spec["num_classes"], in_channels=spec["in_channels"],
                         **spec["model_kwargs"])
    load_weights(model, run_dir / f"{weights}.safetensors")
    return model.eval(), spec


def stats(spec: dict) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(spec["mean"]).view(1, -1, 1, 1), torch.tensor(spec["std"]).view(1, -1, 1, 1)


def _precision(spec: dict) -> str:
    """The precision the run was evaluated in, so eval reproduces its figures; fp16 exists only on CUDA."""
    return "fp32" if spec.get("precision") == "fp16" else spec.get("precision", "fp32")


def load_test_split(spec: dict, data: str, holdout: float = 0.2):
    """The test split of `data` as the run's model sees it: (dataset, uint8 images, labels)."""
    ds = load_dataset(data, holdout=holdout, image_size=spec["image_size"])
    if ds.num_classes != spec["num_classes"] or ds.channels != spec["in_channels"]:
        raise CnnlabError(f"--data {data}: {plural(ds.num_classes, 'class')} of {ds.channels}-channel images, but "
                          f"the model was trained on {plural(spec['num_classes'], 'class')} of "
                          f"{plural(spec['in_channels'], 'channel')}")
    x, y = to_device(ds.test_x, ds.test_y, spec["image_size"], torch.device("cpu"))
    return ds, x, y


def evaluate_run(run_dir: Path, data: str, weights: str = "best", holdout: float = 0.2) -> dict:
    model, spec = load_run(run_dir, weights)
    ds, x, y = load_test_split(spec, data, holdout)
    mean, std = stats(spec)
    logits = predict_logits(model, x, mean, std, _precision(spec), tta=spec.get("tta", 0))
    return {"model": spec["model"], "dataset": ds.name, "classes": ds.classes,
            **metrics_from_logits(logits, y, ds.num_classes)}


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
    """(H, W, channels) uint8, turned upright by its EXIF orientation (a phone photo); CnnlabError if unreadable."""
    from PIL import ImageOps

    if Path(path).is_dir():
        raise CnnlabError(f"{path}: a folder with no image files")
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im).convert("L" if channels == 1 else "RGB")
            return np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1)
    except FileNotFoundError:
        raise CnnlabError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise CnnlabError(f"{path}: not a readable image ({exc})") from None


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
        batch.append((len(results), to_device(img[None], np.zeros(1), spec["image_size"], torch.device("cpu"))[0]))
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
