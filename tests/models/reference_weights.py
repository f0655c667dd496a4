"""Deterministic, framework-free weights for comparing two implementations of the same architecture:
each tensor is drawn from NumPy's PCG64 in state_dict order, so both sides get identical values."""
from __future__ import annotations

import numpy as np
import torch

TORCHVISION_MODELS = ["alexnet", "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
                      "vgg19_bn", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]
INPUT_SIZE = 64  # above AlexNet's 63-pixel minimum, small enough to run every model in seconds


def reference_state(shapes: list[tuple[str, list[int]]]) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    state = {}
    for key, shape in shapes:
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0)
            continue
        x = rng.standard_normal(shape).astype(np.float32)
        if len(shape) > 1:  # conv / linear weight: keep activations O(1) through deep stacks
            x *= np.float32(np.sqrt(1.0 / np.prod(shape[1:])))
        elif key.endswith("running_var"):
            x = 1.0 + 0.1 * np.abs(x)
        elif key.endswith("weight"):
            x = 1.0 + 0.1 * x
        else:
            x = 0.1 * x
        state[key] = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    return state


def reference_input() -> torch.Tensor:
    rng = np.random.default_rng(1)
    return torch.from_numpy(rng.standard_normal((1, 3, INPUT_SIZE, INPUT_SIZE)).astype(np.float32))
