"""cnnlab: build, train, diagnose and search convolutional networks for image classification."""
__version__ = "0.1.0"

from .errors import CnnlabError  # noqa: E402
__all__ = ["CnnlabError", "create_model", "list_models", "__version__"]


def __getattr__(name: str):
    """`cnnlab.create_model` and `cnnlab.list_models` import torch and the model zoo on first use only, so that
    `import cnnlab` (and the command line's help) starts at once."""
    if name in ("create_model", "list_models"):
        from . import models

        return getattr(models, name)
    raise AttributeError(f"module 'cnnlab' has no attribute '{name}'")
