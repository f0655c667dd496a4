"""The model zoo. Importing this package registers every family."""
from . import airbench, alexnet, builder, cifar_resnet, gcnn, resnet, vgg  # noqa: F401  (registration side effects)
from .registry import create_model, list_models, model_family, model_switches, register_model

__all__ = ["create_model", "list_models", "model_family", "model_switches", "register_model"]
