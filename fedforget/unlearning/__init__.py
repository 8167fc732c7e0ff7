"""Unlearning methods behind one interface (:class:`Unlearner`) and a name registry."""

from __future__ import annotations

from fedforget.unlearning.bad_teacher import BadTeacherUnlearner
from fedforget.unlearning.base import (
    UNLEARNER_REGISTRY,
    ClientUpdate,
    DataNeed,
    FederatedTrainFn,
    HistoryRound,
    HookSetup,
    TrainingHook,
    UnknownUnlearnerError,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    build_unlearner,
    configured_unlearner,
    register_unlearner,
    unlearner_names,
)
from fedforget.unlearning.distillation import DistillationUnlearner, DistillSettings
from fedforget.unlearning.fast_fedul import FastFedULUnlearner
from fedforget.unlearning.fedau import FedAUUnlearner
from fedforget.unlearning.federaser import FedEraserUnlearner
from fedforget.unlearning.fedosd import FedOsdUnlearner
from fedforget.unlearning.fedquit import FedQuitUnlearner
from fedforget.unlearning.finetune import FinetuneUnlearner
from fedforget.unlearning.gradient_ascent import GradientAscentUnlearner
from fedforget.unlearning.last_layers import CatastrophicForgettingK, ExactUnlearningK
from fedforget.unlearning.lau import LayerAttackUnlearner
from fedforget.unlearning.mugan import MuGanUnlearner
from fedforget.unlearning.nad import NeuralAttentionDistillationUnlearner
from fedforget.unlearning.negation import NegationUnlearner
from fedforget.unlearning.none import NoUnlearning
from fedforget.unlearning.perturbation import RandomKUnlearner, TopKUnlearner
from fedforget.unlearning.pga import PgaUnlearner
from fedforget.unlearning.quickdrop import QuickDropUnlearner
from fedforget.unlearning.random_label import RandomLabelUnlearner
from fedforget.unlearning.zmugan import ZMuGanUnlearner

__all__ = [
    "UNLEARNER_REGISTRY",
    "BadTeacherUnlearner",
    "CatastrophicForgettingK",
    "ClientUpdate",
    "DataNeed",
    "DistillSettings",
    "DistillationUnlearner",
    "ExactUnlearningK",
    "FastFedULUnlearner",
    "FedAUUnlearner",
    "FedEraserUnlearner",
    "FedOsdUnlearner",
    "FedQuitUnlearner",
    "FederatedTrainFn",
    "FinetuneUnlearner",
    "GradientAscentUnlearner",
    "HistoryRound",
    "HookSetup",
    "LayerAttackUnlearner",
    "MuGanUnlearner",
    "NegationUnlearner",
    "NeuralAttentionDistillationUnlearner",
    "NoUnlearning",
    "PgaUnlearner",
    "QuickDropUnlearner",
    "RandomKUnlearner",
    "RandomLabelUnlearner",
    "TopKUnlearner",
    "TrainingHook",
    "UnknownUnlearnerError",
    "Unlearner",
    "UnlearnerSettings",
    "UnlearningContext",
    "UnlearningRequest",
    "ZMuGanUnlearner",
    "build_unlearner",
    "configured_unlearner",
    "register_unlearner",
    "unlearner_names",
]
