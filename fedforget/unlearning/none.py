"""``none``: the model as it was, the bar every method must clear.

No unlearning and no relay: the deleting clients drop D_f (as for every method) and FedAvg
goes on without it. A quality check that ``none`` passes cannot tell forgetting from doing
nothing (on MNIST a leaving client's data is already at unseen level before any
unlearning), so ``compare`` and every ``sweep`` cell run it beside the methods, and a sweep
cell counts toward acceptance only where ``none`` fails one of its checks
(:mod:`fedforget.report.sweep`).
"""

from __future__ import annotations

from torch import nn

from fedforget.unlearning.base import (
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)


@register_unlearner
class NoUnlearning(Unlearner):
    """Leaves the model as it was (needs nothing from the clients)."""

    name = "none"
    needs = frozenset()

    def unlearn(
        self, model: nn.Module, request: UnlearningRequest, context: UnlearningContext
    ) -> nn.Module:
        return model.to(context.device).eval()
