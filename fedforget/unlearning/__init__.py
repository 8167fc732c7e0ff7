"""Unlearning methods behind one interface (:class:`Unlearner`) and a name registry."""

from fedforget.unlearning.base import (
    UNLEARNER_REGISTRY,
    DataNeed,
    UnknownUnlearnerError,
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
    register_unlearner,
    unlearner_names,
)
from fedforget.unlearning.distillation import DistillationSettings, DistillationUnlearner

__all__ = [
    "UNLEARNER_REGISTRY",
    "DataNeed",
    "DistillationSettings",
    "DistillationUnlearner",
    "UnknownUnlearnerError",
    "Unlearner",
    "UnlearningContext",
    "UnlearningRequest",
    "build_unlearner",
    "register_unlearner",
    "unlearner_names",
]
