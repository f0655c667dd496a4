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
from .train.evaluate import metrics_from_logits, predict_logits
from .train.tensors import to_device


def read_run_spec(run_dir: Path, option: str = "--checkpoint") -> dict:
    """A run folder's model.json: model, model_kwargs, num_classes, in_channels, image_size, classes, ..."""
    spec_file = Path(run_dir) / "model.json"
    if not spec_file.exists():
        raise CnnlabError(f"{option} {run_dir}: not a cnnlab run folder (no model.json)")
    return json.loads(spec_file.read_text())


def load_run(run_dir: Path, weights: str = "best") -> tuple[torch.nn.Module, dict]:
    run_dir = Path(run_dir)
    spec = read_run_spec(run_dir)
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


def predict_images(run_dir: Path, paths: list[Path], top_k: int = 5, weights: str = "best") -> list[dict]:
    model, spec = load_run(run_dir, weights)
    if top_k < 1:
        raise CnnlabError(f"--top-k must be at least 1, got {top_k}")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = im.convert("L" if spec["in_channels"] == 1 else "RGB")
                images.append(np.asarray(im, dtype=np.uint8).reshape(im.size[1], im.size[0], -1))
        except FileNotFoundError:
            raise CnnlabError(f"{path}: file not found") from None
        except (UnidentifiedImageError, OSError) as exc:
            raise CnnlabError(f"{path}: not a readable image ({exc})") from None
    mean, std = stats(spec)
    results = []
    for path, img in zip(paths, images):
        x, _ = to_device(img[None], np.zeros(1), spec["image_size"], torch.device("cpu"))
        probs = predict_logits(model, x, mean, std, _precision(spec), tta=spec.get("tta", 0)).softmax(1)[0]
        top = probs.topk(min(top_k, len(probs)))
        results.append({"image": str(path), "top": [{"class": spec["classes"][i], "probability": float(p)}
                                                    for p, i in zip(top.values, top.indices)]})
    return results
