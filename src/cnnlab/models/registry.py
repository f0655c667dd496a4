"""A name -> builder registry, like timm's: `create_model("resnet20", num_classes=10, bn=False)`."""
from __future__ import annotations

import inspect
from typing import Callable

import torch.nn as nn

from ..errors import CnnlabError
from ..text import did_you_mean, with_article

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}
_FAMILY: dict[str, str] = {}


def register_model(family: str) -> Callable:
    """Decorator: register a builder under its function name, grouped by family for `cnnlab models`."""

    def wrap(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[fn.__name__] = fn
        _FAMILY[fn.__name__] = family
        return fn

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY, key=lambda n: (_FAMILY[n], _natural_key(n)))


def model_family(name: str) -> str:
    return _FAMILY[name]


def model_switches(name: str) -> dict[str, object]:
    """The keyword switches a model accepts, with their defaults."""
    sig = inspect.signature(_REGISTRY[name])
    return {p.name: p.default for p in sig.parameters.values() if p.default is not inspect.Parameter.empty}


def create_model(name: str, num_classes: int | None = None, in_channels: int = 3, **switches) -> nn.Module:
    """Build a registered model. Unknown names or switches raise CnnlabError naming the culprit."""
    check_model_kwargs(name, switches)
    if num_classes is not None:
        switches["num_classes"] = num_classes
    switches["in_channels"] = in_channels
    _check_positive(switches, "num_classes", "in_channels")
    return _REGISTRY[name](**switches)


# switches that every model takes but that a trainer or `cnnlab summary` sets from the data
FROM_THE_DATA = {"num_classes": "the number of classes (`cnnlab summary`: --classes)",
                 "in_channels": "the number of image channels (`cnnlab summary`: --input CxHxW)"}


def check_model_kwargs(name: str, switches: dict) -> None:
    """Raise CnnlabError in one line, with a suggestion where one is close, unless `name` is a registered model
    and `switches` are switches of it with values of the right type. num_classes and in_channels are refused
    here: they come from the data set, and passing them as well as a trainer does would be a TypeError.
    Call it before `create_model(name, num_classes=..., in_channels=..., **switches)`."""
    if name not in _REGISTRY:
        raise CnnlabError(f"unknown model '{name}'{did_you_mean(name, list_models())} (`cnnlab models` lists the "
                          f"{len(_REGISTRY)} available)")
    allowed = model_switches(name)
    for key, value in switches.items():
        if key in FROM_THE_DATA:
            raise CnnlabError(f"model switch {key}={value!r}: the data set sets {FROM_THE_DATA[key]}; leave {key} "
                              f"out of --model-kwargs")
        if key not in allowed:
            switch_names = sorted(set(allowed) - set(FROM_THE_DATA))
            raise CnnlabError(f"model '{name}' has no switch '{key}'{did_you_mean(key, switch_names)} (it takes: "
                              f"{', '.join(switch_names)})")
        _check_type(name, key, value, allowed[key])


def _check_type(model: str, key: str, value: object, default: object) -> None:
    """A switch takes the type of its default (an int where a float is expected is fine). The message shows
    the default as an example of the form: `widths=64` reads as a number where '64,256,256' is meant."""
    ok = isinstance(value, bool) if isinstance(default, bool) else (
        isinstance(value, (int, float)) and not isinstance(value, bool) if isinstance(default, float) else
        isinstance(value, type(default)) and not isinstance(value, bool))
    if not ok:
        example = str(default).lower() if isinstance(default, bool) else repr(default)  # as typed: bn=false
        raise CnnlabError(f"model '{model}': switch {key}={value!r} must be {with_article(type(default).__name__)} "
                          f"such as its default, {example}")


def _check_positive(values: dict, *keys: str) -> None:
    for key in keys:
        if key in values and (not isinstance(values[key], int) or values[key] < 1):
            raise CnnlabError(f"{key} must be a positive integer, got {values[key]!r}")


def _natural_key(name: str) -> tuple:
    import re

    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))
