"""`cnnlab export`: a trained run as one file that a serving runtime loads without cnnlab.

The exported graph takes what `cnnlab predict` feeds the model: images NCHW at the run's image size, values
0..255 (uint8, or float), any batch size. Inside it: the division by 255 and the run's normalisation, the model
in eval mode (group convolutions and batch norms as the ordinary layers they apply), the run's test-time augmentation,
and fp32 logits out, one row per image, one column per class of the run.

    onnx         one .onnx file (float32 input named `images`, output `logits`); the class names and the
                 input description travel in the model's metadata_props. Needs onnx and onnxscript
                 (`pip install 'cnnlab[export]'`, which also brings onnxruntime to check the file).
    torchscript  a .pt file for torch.jit.load (uint8 or float input); the same description in a JSON file
                 beside it (FILE.json) and inside the archive (extra file `cnnlab.json`)."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn

from . import __version__
from .errors import CnnlabError
from .inference import load_run, stats
from .models.equivariant import GroupBatchNorm, _OrientedConv
from .runtime.evaluate import tta_logits
from .runtime.files import atomic_write_text, check_output, publish, temporary_beside
from .runtime.tensors import normalize
from .text import plural
from .train.run_folder import RunFolder

FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}
ONNX_INSTALL = "pip install 'cnnlab[export]'"


class ImageClassifier(nn.Module):
    """The run's model as `predict` applies it: images 0..255 in, fp32 logits out."""

    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, tta: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("channel_mean", mean.float().clone())
        self.register_buffer("channel_std", std.float().clone())
        self.tta = tta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return tta_logits(self.model, normalize(images, self.channel_mean, self.channel_std), self.tta)


def with_plain_layers(model: nn.Module) -> nn.Module:
    """A copy of `model` for inference whose group layers are the ordinary layers they apply in eval mode:
    each group convolution a Conv2d with its filter bank built once, each group batch norm a BatchNorm2d.
    The same outputs, and a graph of plain Conv and BatchNormalization nodes that runtimes fuse."""
    model = copy.deepcopy(model)
    for name, module in list(model.named_modules()):
        plain = module.as_conv2d() if isinstance(module, _OrientedConv) else \
            module.as_batchnorm2d() if isinstance(module, GroupBatchNorm) else None
        if plain is not None:
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent), attr, plain)
    return model


def exportable(run_dir: Path, weights: str = "best") -> tuple[ImageClassifier, dict]:
    """The run's model wrapped for export (eval mode, fp32, on the CPU) and its model.json."""
    model, spec = load_run(run_dir, weights, option="export")
    mean, std = stats(spec)
    wrapped = ImageClassifier(with_plain_layers(model.float().eval()), mean, std, spec.get("tta", 0)).eval()
    return wrapped.requires_grad_(False), spec


def description(spec: dict, fmt: str) -> dict:
    """What travels with the exported file: the classes and what the input must be."""
    c, s = spec["in_channels"], spec["image_size"]
    dtype = "float32" if fmt == "onnx" else "uint8 or float32"
    channels = "RGB" if c == 3 else plural(c, "channel")
    return {"classes": spec["classes"], "model": spec["model"], "model_kwargs": spec["model_kwargs"],
            "input": f"images {dtype}, shape (batch, {c}, {s}, {s}), values 0..255 ({channels}); normalisation inside",
            "output": f"logits float32, shape (batch, {len(spec['classes'])})", "input_shape": [None, c, s, s],
            "mean": spec["mean"], "std": spec["std"], "tta": spec.get("tta", 0), "cnnlab": __version__}


def default_out(run_dir: Path, fmt: str) -> Path:
    return Path(run_dir) / f"model{FORMATS[fmt]}"


def export_run(run_dir: Path, fmt: str, out: Path | None = None, weights: str = "best") -> dict:
    """Write the run's model as `fmt`; returns {"path", "format", "classes", "description", ...}."""
    if fmt not in FORMATS:
        raise CnnlabError(f"--format must be onnx or torchscript, got '{fmt}'")
    if fmt == "onnx":
        require_onnx()
    wrapped, spec = exportable(run_dir, weights)
    out = Path(out) if out is not None else default_out(run_dir, fmt)
    check_output(out)
    if not out.parent.is_dir():
        raise CnnlabError(f"--out {out}: the folder {out.parent} does not exist")
    folder = RunFolder(run_dir)
    sidecar = out.with_name(out.name + ".json")
    if folder.owns(out) or folder.owns(sidecar):
        raise CnnlabError(f"--out {out}: would overwrite the run's own files; choose another name")
    if fmt == "torchscript" and sidecar.is_dir():
        raise CnnlabError(f"--out {out}: {sidecar} is a folder, where the description beside the model goes")
    if fmt == "torchscript":
        check_output(sidecar, f"--out {out}: the description beside it,")
    meta = description(spec, fmt)
    example = torch.rand(2, spec["in_channels"], spec["image_size"], spec["image_size"]) * 255
    tmp = temporary_beside(out)
    try:
        if fmt == "onnx":
            _write_onnx(wrapped, example, meta, tmp)
        else:
            _write_torchscript(wrapped, example, meta, tmp)
        publish(tmp, out)
    except OSError as exc:
        raise CnnlabError(f"--out {out}: cannot write ({exc.strerror})") from None
    finally:
        tmp.unlink(missing_ok=True)
    result = {"path": str(out), "format": fmt, "model": spec["model"], "weights": weights,
              "classes": spec["classes"], "input": meta["input"]}
    if fmt == "torchscript":
        try:
            atomic_write_text(sidecar, json.dumps(meta, indent=1))
        except OSError as exc:
            out.unlink(missing_ok=True)  # no model without its description
            raise CnnlabError(f"--out {out}: cannot write {sidecar.name} beside it ({exc.strerror})") from None
        result["description"] = str(sidecar)
    return result


def require_onnx() -> None:
    """One line naming what to install when the ONNX exporter's packages are missing."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise CnnlabError(f"--format onnx needs {' and '.join(missing)}: {ONNX_INSTALL}")


def _write_onnx(wrapped: ImageClassifier, example: torch.Tensor, meta: dict, path: Path) -> None:
    import logging
    import warnings

    batch = torch.export.Dim("batch")
    quiet = logging.getLogger("torch.onnx")  # it reports each stage, and torchvision's absence, at length
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(wrapped, (example,), dynamo=True, input_names=["images"],
                                        output_names=["logits"], dynamic_shapes={"images": {0: batch}},
                                        optimize=True, verbose=False)
    except Exception as exc:  # the exporter's own failure: name the model and the first line of why
        raise CnnlabError(f"{meta['model']} cannot be exported to ONNX here: "
                          f"{str(exc).strip().splitlines()[0][:300]}") from None
    finally:
        quiet.setLevel(level)
    for key, value in meta.items():
        program.model.metadata_props[key] = value if isinstance(value, str) else json.dumps(value)
    program.model.doc_string = f"cnnlab {meta['model']}: {meta['input']} -> {meta['output']}"
    program.save(str(path), external_data=False)


def _write_torchscript(wrapped: ImageClassifier, example: torch.Tensor, meta: dict, path: Path) -> None:
    import warnings

    with warnings.catch_warnings():  # torch.jit is in maintenance; its deprecation notices are not the user's
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(wrapped, example, check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={"cnnlab.json": json.dumps(meta)})


def check_export(path: Path, fmt: str, run_dir: Path, weights: str = "best", count: int = 4,
                 seed: int = 0) -> float | None:
    """The largest difference between the exported file's logits and PyTorch's (cnnlab's own `predict`
    path, in fp32) on `count` random images; None when ONNX Runtime is absent for an ONNX file."""
    from .runtime.evaluate import predict_logits

    model, spec = load_run(run_dir, weights, option="export")
    size, c = spec["image_size"], spec["in_channels"]
    images = torch.randint(0, 256, (count, c, size, size), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(seed))
    mean, std = stats(spec)
    expected = predict_logits(model.float(), images, mean, std, "fp32", tta=spec.get("tta", 0))
    got = run_exported(path, fmt, images)
    if got is None:
        return None
    return float((got - expected).abs().max())


def run_exported(path: Path, fmt: str, images: torch.Tensor) -> torch.Tensor | None:
    """Logits of an exported file on uint8 images, through ONNX Runtime or torch.jit (None: no ONNX Runtime)."""
    if fmt == "onnx":
        try:
            import onnxruntime
        except ImportError:
            return None
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return torch.from_numpy(session.run(None, {"images": images.float().numpy()})[0])
    with torch.no_grad():
        return torch.jit.load(str(path))(images).float()
