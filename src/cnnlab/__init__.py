"""cnnlab: build, train, diagnose and search convolutional networks for image classification."""
from .errors import CnnlabError
from .models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["CnnlabError", "create_model", "list_models", "__version__"]
