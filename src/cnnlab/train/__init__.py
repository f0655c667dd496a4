"""Training: the config, the loop, checkpoints and evaluation."""
from .config import TrainConfig
from .loop import train

__all__ = ["TrainConfig", "train"]
