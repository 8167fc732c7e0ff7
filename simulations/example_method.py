"""Example: a method that brings its own client-side need, in one module.

``count-reset`` forgets whole classes (a class deletion, or a leaving client that held every
sample of a class) from what the clients counted while they trained: each client's
training-time hook counts the labels of its samples and of the samples it will delete
(:class:`LabelCounts`, kept on the client), the server asks every client for its counts at
the deletion (the ``label-counts`` need, :class:`LabelCountsNeed`), and the method resets
the head rows of the classes whose every sample is deleted, so that the model never predicts
them. It needs no D_f, no retained sample and no training at the deletion.

Nothing else in fedforget knows it: this module registers the method
(:func:`~fedforget.unlearning.register_unlearner`) and its need
(:func:`~fedforget.needs.register_need`). Use it as a plugin::

    fedforget simulate --mode class --forget-class 3 --strategy count-reset \\
        --config run.toml        # with plugins = ["fedforget.simulations.example_method"]

It stands for a method, not for the state of the art: it forgets only classes the deletion
removes entirely, and it resets outputs instead of unlearning features.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from fedforget.data.modes import Kind
from fedforget.federated import State
from fedforget.models import classifier_head
from fedforget.needs import ClientStateNeed, register_need
from fedforget.unlearning import (
    HookSetup,
    TrainingHook,
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)

NEED = "label-counts"
RESET_BIAS = -1e4
"""A reset class's bias: far below any other logit, so the class is never predicted."""


class LabelCounts(TrainingHook):
    """A client's label counts: of all its samples and of those it will delete."""

    def __init__(self, setup: HookSetup) -> None:
        classes = setup.num_classes
        labels = np.asarray(setup.data.y, dtype=np.int64)
        self.counts = {
            "all": np.bincount(labels, minlength=classes).astype(np.int64),
            "deleting": np.bincount(labels[setup.deleting], minlength=classes).astype(np.int64),
        }

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
        """Nothing to do per step: the counts need the data only."""

    def kept(self) -> State:
        return dict(self.counts)

    def spent_seconds(self) -> float:
        return 0.0


@register_unlearner
class CountResetUnlearner(Unlearner):
    """Resets the head rows of the classes the deletion removes entirely (the example)."""

    name = "count-reset"
    needs = frozenset({NEED})
    hook_need = NEED
    modes = frozenset({Kind.CLASS, Kind.CLIENT})
    mode_reason = "it forgets classes the deletion removes entirely"

    def training_hook(self, setup: HookSetup) -> LabelCounts:
        return LabelCounts(setup)

    def unlearn(
        self, model: nn.Module, request: UnlearningRequest, context: UnlearningContext
    ) -> nn.Module:
        self.check_mode(request)
        counts = list(request.client_state.get(NEED, {}).values())
        if not counts:
            raise ValueError(f"{self.name} needs the clients' label counts (none came)")
        total = np.sum([c["all"] for c in counts], axis=0)
        deleting = np.sum([c["deleting"] for c in counts], axis=0)
        gone = np.flatnonzero((total > 0) & (deleting >= total))
        head = classifier_head(model)
        with torch.no_grad():
            head.weight[gone] = 0.0
            head.bias[gone] = RESET_BIAS
        context.report(self.name, 1, 1, classes=float(len(gone)))
        return model.to(context.device).eval()


@register_need
class LabelCountsNeed(ClientStateNeed):
    """Every client's label counts, asked for at the deletion (``query.label_counts``)."""

    name = NEED
    summary = "every client's label counts, taken while it trained (the example method)"
