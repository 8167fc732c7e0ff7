"""Fast-FedUL: training-free removal of a client's influence from the stored updates.

Huynh et al., "Fast-FedUL: A Training-Free Federated Unlearning with Provable Skew
Resilience" (ECML-PKDD 2024). The server keeps every client's update of every round (the
``history`` need, as for FedEraser); when a client leaves, it subtracts from the final
global model that client's influence, estimated round by round from the stored updates. No
client trains, no data moves: the deletion step is a few vector operations on the server.

Equations (our reading; the paper text is not in this repository). Round t's FedAvg update
over its participants S_t, with client k's stored update Delta_k^t and sample count n_k, and
the update the round would have made without the leaving clients U:

    g_t      = sum_{k in S_t}     n_k / N_t      * Delta_k^t
    g_t^{-U} = sum_{k in S_t \\ U} n_k / N_t^{-U} * Delta_k^t     (0 if only U trained)

The *skew* of round t is c_t = g_t - g_t^{-U}: the step the global model took because U took
part (its own update, and the re-weighting of the others'). The skew of an early round is
carried into every later round, where the other clients' training partly corrects it (for a
smooth loss, local SGD from a shifted start w + e moves back by about -eta H e: the skew
contracts). Fast-FedUL bounds that propagation; we model it with one retention factor
kappa in [0, 1] per later round:

    w~ = w_T - sum_{t=1}^{T} kappa^{T-t} c_t

kappa = 1 removes every skew unchanged (no correction by later rounds), kappa = 0 only the
last round's.

Choices where our reading leaves room:

- ``retention`` (kappa) defaults to 1, i.e. no correction by later rounds is assumed: it
  removes the most and needs no estimate of the loss's curvature. The paper's skew bound
  comes from a Lipschitz argument that we do not reproduce, so kappa is an option, not an
  estimate.
- Only the floating-point arrays move; integer buffers (BatchNorm's counter) stay.
- Client removal only (mode ``client``): a sample deletion leaves every client in the
  federation and their stored updates mix D_f with the data they keep, so subtracting them
  would remove D_r too. Other modes are refused with a one-line error.
- A round in which no leaving client trained has no skew. The result is used as is: the
  method is training-free, so no recovery rounds are part of it (``fedforget compare
  --after-rounds`` measures what later FedAvg rounds do to it).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from pydantic import Field

from fedforget.data.modes import Kind
from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning.base import (
    HistoryRound,
    State,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)


class FastFedULSettings(UnlearnerSettings):
    """Options of :class:`FastFedULUnlearner`.

    Attributes
    ----------
    retention : float
        kappa: the share of a round's skew still present one round later (1 = all of it).
    """

    retention: float = Field(1.0, ge=0, le=1)


@register_unlearner
class FastFedULUnlearner(Unlearner):
    """Subtract the leaving clients' per-round skew from the global model (no training)."""

    name = "fast-fedul"
    needs = frozenset({"history"})
    modes = frozenset({Kind.CLIENT})
    mode_reason = "it removes whole clients' stored updates"
    Settings = FastFedULSettings
    settings: FastFedULSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """``w_T - sum_t kappa^(T-t) c_t`` over the stored rounds."""
        self.check_mode(request)
        leaving = require_leaving_clients(self.name, request)
        state = state_to_numpy(model)
        total = len(request.history)
        correction = None
        for step, stored in enumerate(request.history, start=1):
            skew = round_skew(stored, leaving)
            if correction is not None:
                correction = {k: v * self.settings.retention for k, v in correction.items()}
            correction = skew if correction is None else _add(correction, skew)
            context.report("skew", step, total, round=float(stored.round))
        if correction is None:
            raise ValueError("fast-fedul needs the stored client updates of the past rounds")
        return load_numpy_state(model, subtract_floating(state, correction)).eval()


def require_leaving_clients(name: str, request: UnlearningRequest) -> frozenset[int]:
    """The leaving clients' ids, which must have stored updates (else a ``ValueError``)."""
    leaving = frozenset(request.leaving_clients)
    if not leaving:
        raise ValueError(f"{name} needs the ids of the leaving clients (client mode)")
    if not request.history:
        raise ValueError(f"{name} needs the stored client updates of the past rounds")
    if not any(leaving & stored.updates.keys() for stored in request.history):
        raise ValueError(f"{name}: no stored update of the leaving clients {sorted(leaving)}")
    return leaving


def round_skew(stored: HistoryRound, leaving: Iterable[int]) -> State:
    """``c_t = g_t - g_t^{-U}``: the round's FedAvg update minus the one without ``leaving``.

    Floating-point arrays only, in float64. Zero when no leaving client trained that round.
    """
    leaving = set(leaving)
    everyone = list(stored.updates.values())
    staying = [u for u in everyone if u.client not in leaving]
    template = {k: v for k, v in everyone[0].state.items() if v.dtype.kind == "f"}
    if len(staying) == len(everyone):
        return {k: np.zeros(v.shape) for k, v in template.items()}
    return _add(_mean_update(everyone, template), _mean_update(staying, template), sign=-1.0)


def _mean_update(updates: list, template: State) -> State:
    """The sample-weighted mean of the updates' floating arrays (zeros for no update)."""
    total = sum(u.num_examples for u in updates)
    mean = {k: np.zeros(v.shape) for k, v in template.items()}
    for update in updates:
        for key in mean:
            mean[key] += (update.num_examples / total) * update.state[key].astype(np.float64)
    return mean


def _add(a: State, b: State, sign: float = 1.0) -> State:
    return {key: a[key] + sign * b[key] for key in a}


def subtract_floating(state: State, correction: State) -> State:
    """``state - correction`` on the floating arrays, in their dtype; the rest unchanged."""
    return {
        key: (value - correction[key]).astype(value.dtype) if key in correction else value
        for key, value in state.items()
    }
