"""FedEraser: unlearning by calibrated replay of the stored client updates.

Liu et al., "FedEraser: Enabling Efficient Client-Level Data Removal from Federated Learning
Models" (IWQoS 2021), the most cited federated unlearning baseline. During training the server
keeps every client's update of every ``interval``-th round (the ``history`` need). To unlearn,
it rebuilds the global model from the initial weights w_0, replaying the kept rounds: at each
one, the remaining clients train the current rebuilt model for a fraction of the usual local
epochs (*calibration training*, the ``rounds`` need: it runs on the clients, on their retained
data only), and the server keeps the *direction* of each calibration update with the
*magnitude* of the client's stored update of that round, layer by layer:

    U~_k = ||U_k^old|| * U_k^cal / ||U_k^cal||,    w~_{j+1} = w~_j + sum_k (n_k / n) U~_k

Choices where the paper leaves room (also in docs/methods.md):

- The paper removes whole clients. For sample-level deletions (backdoor, random, class modes)
  every client remains and calibrates on the data it still holds; the stored magnitudes come
  from rounds that saw D_f. In ``client`` mode the leaving clients' stored updates are dropped.
- Calibration epochs = ``max(1, round(calibration_ratio * local_epochs))`` (paper: ratio 0.5),
  at the federation's learning rate; ``interval`` (paper: Delta t = 2) defaults to 1 here:
  with 7 rounds before the deletion, skipping every other stored round loses too much training.
- Norms are per array (layer weight, bias); integer buffers (BatchNorm's counter) take the
  calibration clients' average. A client that trained in a kept round but holds no data any
  more is skipped, and so is a calibration client without a stored update for that round.
- Storage: all kept updates stay in the server's memory; the run records their bytes
  (``history_bytes``): 20 clients x 7 rounds x LeNet-5 (61.7k float32 parameters) = 34.6 MB.
"""

from __future__ import annotations

import numpy as np

from fedforget.models import ClassifierModel
from fedforget.training import load_numpy_state
from fedforget.unlearning.base import (
    ClientUpdate,
    HistoryRound,
    State,
    Unlearner,
    UnlearnerSettings,
    UnlearningContext,
    UnlearningRequest,
    register_unlearner,
)

EPS = 1e-12


class FedEraserSettings(UnlearnerSettings):
    """FedEraser's settings: which stored rounds to replay and how long to calibrate."""

    interval: int = 1
    calibration_ratio: float = 0.5
    lr: float | None = None


@register_unlearner
class FedEraserUnlearner(Unlearner):
    """Rebuild the model from w_0 with calibrated stored updates (client-side calibration).

    Needs the stored history and training rounds on the clients; never D_f.
    """

    name = "federaser"
    needs = frozenset({"history", "rounds"})
    Settings = FedEraserSettings
    settings: FedEraserSettings

    def unlearn(
        self, model: ClassifierModel, request: UnlearningRequest, context: UnlearningContext
    ) -> ClassifierModel:
        """Replay the kept rounds from w_0, calibrating each client's stored update."""
        train_on_clients = self.require_client_training(context)
        if not request.history:
            raise ValueError("federaser needs the stored client updates of the past rounds")
        kept = request.history[:: self.settings.interval]
        epochs = max(1, round(self.settings.calibration_ratio * context.local_epochs))
        lr = self.settings.lr or context.local_lr
        leaving = set(request.leaving_clients)
        state = {key: value.copy() for key, value in context.initial_state.items()}
        for step, stored in enumerate(kept, start=1):
            trained = train_on_clients(state, epochs, lr)
            state = calibrated_step(state, stored, trained, leaving)
            context.report("calibration", step, len(kept), round=float(stored.round))
        return load_numpy_state(model, state).eval()


def calibrated_step(
    state: State, stored: HistoryRound, trained: list[ClientUpdate], leaving: set[int]
) -> State:
    """One FedEraser replay step: ``state + sum_k w_k * ||U_k^old|| U_k^cal / ||U_k^cal||``."""
    pairs = [
        (stored.updates[u.client], u)
        for u in trained
        if u.client in stored.updates and u.client not in leaving
    ]
    if not pairs:
        raise ValueError(f"no remaining client has a stored update for round {stored.round}")
    total = sum(new.num_examples for _, new in pairs)
    result = {}
    for key, value in state.items():
        if not np.issubdtype(value.dtype, np.floating):
            stacked = np.stack([new.state[key] for _, new in pairs])
            result[key] = np.round(stacked.mean(axis=0)).astype(value.dtype)
            continue
        step = np.zeros_like(value, dtype=np.float64)
        for old, new in pairs:
            direction = new.state[key].astype(np.float64) - value
            scale = np.linalg.norm(old.state[key]) / (np.linalg.norm(direction) + EPS)
            step += (new.num_examples / total) * scale * direction
        result[key] = (value + step).astype(value.dtype)
    return result
