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
from fedforget.unlearning.distillation import DistillationUnlearner

__all__ = [
    "UNLEARNER_REGISTRY",
    "DataNeed",
    "DistillationUnlearner",
    "UnknownUnlearnerError",
    "Unlearner",
    "UnlearningContext",
    "UnlearningRequest",
    "build_unlearner",
    "register_unlearner",
    "unlearner_names",
]
