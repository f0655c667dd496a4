"""Fine-tuning: start a model from pretrained weights (`--init-from`), freeze its first layers (`--freeze`), and
tell the optimiser which parameters came from the file (`--pretrained-lr-scale`).

`--init-from` takes a torchvision-format state dict (`.pth`/`.pt`, read with `torch.load(weights_only=True)`, or
`.safetensors`) or a cnnlab run folder (its best weights). Every key is matched by name and shape: the
classifier head (the last conv or linear layer, and any layer after it) is replaced, left as initialised,
when its shape differs (another class count); any other difference refuses the file in one line naming the
first key that does not fit and both shapes. Batch-norm step counters (`num_batches_tracked`, absent from
torchvision's older files) are not weights: missing ones stay as they are."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from ..errors import CnnlabError
from ..models.equivariant import _OrientedConv
from ..runtime.files import check_values, read_tensors
from ..text import plural
from .run_folder import RunFolder

LAYERS = (nn.Conv2d, nn.Linear, _OrientedConv)  # what --freeze N counts, in the order the model declares them
COUNTERS = "num_batches_tracked"


def layer_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, LAYERS)]


def parameter_layers(model: nn.Module) -> dict[str, int]:
    """Each parameter's name -> the number of conv/linear layers declared up to its module (itself included):
    `--freeze N` and `--freeze-from` take the parameters where it is at most N, a layer's norm with it."""
    owner, count = {}, 0
    for name, m in model.named_modules():
        count += isinstance(m, LAYERS)
        owner[name] = count
    return {name: owner[name.rpartition(".")[0]] for name, _ in model.named_parameters()}


def head_keys(model: nn.Module) -> set[str]:
    """The state-dict keys of the classifier head: the last conv or linear layer and every module declared
    after it (a norm over the class logits), whose shapes follow the number of classes."""
    names = [name for name, _ in model.named_modules()]  # parents before children: no ancestor follows
    after = set(names[names.index(layer_names(model)[-1]):])
    return {key for key in model.state_dict() if key.rpartition(".")[0] in after}


def read_state(source: str) -> tuple[dict[str, torch.Tensor], list[str] | None]:
    """A state dict from a file (.safetensors, or a torch.save'd .pth read without unpickling code) or a run
    folder's best weights, and the class names it was trained on where known (a run folder's)."""
    path = Path(source)
    if path.is_dir():
        folder = RunFolder(path).require("--init-from")
        return read_tensors(folder.weights("best")), folder.read_spec()["classes"]
    if not path.is_file():
        raise CnnlabError(f"--init-from {source}: no such file or run folder")
    if path.suffix == ".safetensors":
        return read_tensors(path), None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001  any bytes reach the unpickler, which fails in many ways on them
        raise CnnlabError(f"--init-from {source}: not a weights file torch.load reads safely "
                          f"({(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]})") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict", state.get("model")), dict):
        state = state.get("state_dict", state.get("model"))  # a training checkpoint holding the weights
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CnnlabError(f"--init-from {source}: expected a state dict (names to tensors), got "
                          f"{type(state).__name__}")
    if state and all(k.startswith("module.") for k in state):  # saved from a DataParallel/DDP wrapper
        state = {k[len("module."):]: v for k, v in state.items()}
    return state, None


def init_from(model: nn.Module, source: str, classes: list[str] | None = None) -> dict:
    """Load `source` into `model` as the module docstring says; returns what happened, for the summary:
    {"from", "loaded" (tensors), "loaded_parameters" (values of parameters), "replaced": {key: [file shape,
    model shape]}, "left_random": [keys]}. A run folder trained on other `classes` than the new data's (the
    same count, other names) gives the head too as new: its outputs meant other classes."""
    state, source_classes = read_state(source)
    expected = model.state_dict()
    head = head_keys(model)
    other_classes = source_classes is not None and classes is not None and list(source_classes) != list(classes)
    extra = [k for k in state if k not in expected]
    if extra:
        raise CnnlabError(f"--init-from {source}: '{extra[0]}' is not a weight of this model "
                          f"({plural(len(extra), 'key')} of the file are not)")
    loaded, replaced, left = {}, {}, []
    for key, value in expected.items():
        if key not in state:
            if key.endswith(COUNTERS):
                continue
            if key in head:
                left.append(key)
                continue
            raise CnnlabError(f"--init-from {source}: no weights for '{key}' (the model expects shape "
                              f"{tuple(value.shape)})")
        got = state[key]
        if tuple(got.shape) != tuple(value.shape) or other_classes and key in head:
            if key in head:
                replaced[key] = [list(got.shape), list(value.shape)]
                continue
            raise CnnlabError(f"--init-from {source}: '{key}' has shape {tuple(got.shape)} in the file, the model "
                              f"expects {tuple(value.shape)}")
        check_values(f"--init-from {source}", key, got, value)
        loaded[key] = got
    model.load_state_dict(loaded, strict=False)
    parameters = dict(model.named_parameters())
    return {"from": str(source), "loaded": len(loaded),
            "loaded_parameters": sum(v.numel() for k, v in loaded.items() if k in parameters),
            "replaced": replaced, "left_random": left}


def pretrained_parameters(model: nn.Module, init: dict | None) -> set[int]:
    """ids of the parameters that `init` (init_from's report) loaded: every one but those replaced or left."""
    if not init or not init.get("from"):  # --freeze alone: nothing was loaded
        return set()
    fresh = set(init["replaced"]) | set(init["left_random"])
    return {id(p) for name, p in model.named_parameters() if name not in fresh}


def describe_init(init: dict) -> str:
    """One line: what was loaded, replaced, left random and frozen."""
    parts = []
    if init.get("from"):
        replaced = ", ".join(f"{k} {tuple(a)} -> {tuple(b)}" for k, (a, b) in init["replaced"].items())
        parts.append(f"init from {init['from']}: loaded {plural(init['loaded'], 'tensor')} "
                     f"({init['loaded_parameters']:,} parameters); replaced: {replaced or 'none'}; left random: "
                     f"{', '.join(init['left_random']) or 'none'}")
    if init.get("frozen"):
        which = "every layer but the head" if init["freeze"] == "backbone" else \
            f"the first {plural(init['freeze'], 'layer')}"
        parts.append(f"frozen: {plural(init['frozen'], 'tensor')} ({which})")
    return "; ".join(parts)


def freeze(model: nn.Module, what: int | str) -> list[str]:
    """Stop training the first `what` conv/linear layers (with the norms that follow each), or with
    "backbone" every layer but the classifier head. Returns the frozen parameter names. Batch-norm running
    statistics of frozen layers still follow the new data."""
    if not what:
        return []
    names = layer_names(model)
    if what == "backbone":
        head = head_keys(model)
        frozen = [n for n, _ in model.named_parameters() if n not in head]
    else:
        if what >= len(names):
            raise CnnlabError(f"--freeze {what}: the model has {plural(len(names), 'layer')}; freezing them all "
                              f"leaves nothing to train")
        frozen = [n for n, layer in parameter_layers(model).items() if layer <= what]
    params = dict(model.named_parameters())
    for n in frozen:
        params[n].requires_grad_(False)
    return frozen
