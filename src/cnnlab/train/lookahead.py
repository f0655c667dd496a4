"""airbench's lookahead: every few steps the fast weights (what SGD moves) are pulled toward a slow
exponential average of themselves, and the average replaces them. The pull weakens as training ends
(decay grows with the cube of progress), and after the last step the average is the model."""
from __future__ import annotations

import torch
import torch.nn as nn


class Lookahead:
    every = 5  # steps between synchronisations

    def __init__(self, model: nn.Module) -> None:
        self.slow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    def after_step(self, model: nn.Module, step: int, total_steps: int) -> None:
        """Call after optimiser step number `step` (1-based) of `total_steps`."""
        if step % self.every == 0:
            self._sync(model, 0.95 ** 5 * (step / total_steps) ** 3)

    def finish(self, model: nn.Module) -> None:
        self._sync(model, 1.0)

    @torch.no_grad()
    def _sync(self, model: nn.Module, decay: float) -> None:
        for key, value in model.state_dict().items():
            if key in self.slow:
                self.slow[key].lerp_(value, 1 - decay)
                value.copy_(self.slow[key])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.slow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if not isinstance(state, dict) or set(state) != set(self.slow) or any(
                not isinstance(v, torch.Tensor) or v.shape != self.slow[k].shape for k, v in state.items()):
            raise ValueError("the lookahead weights are not this model's")  # (copy_ would broadcast a scalar)
        for key, value in state.items():
            self.slow[key].copy_(value)
