"""Training: the config, the loop, checkpoints and the run folder. `TrainConfig` (and the help of every
setting) loads without torch; `train` brings in the trainer on first use."""
from .config import TrainConfig

__all__ = ["TrainConfig", "train"]


def __getattr__(name: str):
    if name == "train":
        from .loop import train

        return train
    raise AttributeError(f"module 'cnnlab.train' has no attribute '{name}'")
