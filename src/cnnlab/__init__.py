"""cnnlab: build, train, diagnose and search convolutional networks for image classification."""
__version__ = "0.1.0"

from .errors import CnnlabError  # noqa: E402
from .models import create_model, list_models  # noqa: E402
__all__ = ["CnnlabError", "create_model", "list_models", "__version__"]
