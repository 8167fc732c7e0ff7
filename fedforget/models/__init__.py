"""Classifier models and their name registry.

Importing this package registers every built-in model, so :func:`build_model` and
:func:`model_names` see them all.
"""

from fedforget.models.base import (
    MODEL_REGISTRY,
    ClassifierModel,
    UnknownModelError,
    build_model,
    classifier_head,
    load_model,
    logits_and_features,
    missing_parts,
    model_names,
    read_weights,
    register_model,
    weights_fit,
)
from fedforget.models.lenet import AttLeNet, LeNet5
from fedforget.models.resnet import CifarResNet

__all__ = [
    "MODEL_REGISTRY",
    "AttLeNet",
    "CifarResNet",
    "ClassifierModel",
    "LeNet5",
    "UnknownModelError",
    "build_model",
    "classifier_head",
    "load_model",
    "logits_and_features",
    "missing_parts",
    "model_names",
    "read_weights",
    "register_model",
    "weights_fit",
]
