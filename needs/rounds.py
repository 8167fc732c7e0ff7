"""The ``rounds`` need: training on the clients during the unlearning (``train.local``).

The unlearner gets :attr:`~fedforget.unlearning.UnlearningContext.federated_train`: the server
sends weights, every remaining client trains them on its retained data and sends them back
(FedEraser's calibration, fine-tuning, FedOSD's UCE rounds). The clients drop D_f before the
unlearner runs; the run records the calls (figure ``client_training_calls``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from flwr.app import RecordDict

from fedforget import protocol as P
from fedforget.federated import ClientUpdate
from fedforget.needs.base import (
    ClientHandler,
    ClientView,
    Gathered,
    GatherStep,
    Need,
    register_need,
)
from fedforget.needs.history import client_update
from fedforget.needs.records import arrays_from


@register_need
class RoundsNeed(Need):
    """Local training rounds on the remaining clients (figure: ``client_training_calls``)."""

    name = "rounds"
    order = 40
    summary = "training rounds on the remaining clients during the unlearning (train.local)"
    completes_first = True

    def gather(self, step: GatherStep) -> Gathered:
        super().gather(step)
        self.step_figures = {"client_training_calls": 0}
        return Gathered(context={"federated_train": self._client_training(step.grid)})

    def _client_training(self, grid) -> Callable[..., list[ClientUpdate]]:
        parts = self.parts

        def train(state: dict[str, np.ndarray], epochs: int, lr: float) -> list[ClientUpdate]:
            config = parts.make_config(**{P.EPOCHS: epochs, P.LEARNING_RATE: lr})
            record = RecordDict({P.ARRAYS: arrays_from(state), P.CONFIG: config})
            nodes = parts.messenger.active_nodes(grid)
            replies = parts.messenger.query(grid, nodes, P.LOCAL_TRAIN, record)
            self.step_figures["client_training_calls"] += 1
            for reply in replies:
                parts.ledger.note_train_reply(reply)
            return [client_update(reply) for reply in replies]

        return train

    @classmethod
    def client_handlers(cls) -> dict[str, ClientHandler]:
        return {P.LOCAL_TRAIN: _local_train}


def _local_train(view: ClientView) -> object:
    """Training asked for by an unlearner (e.g. FedEraser's calibration), on retained data."""
    return view.train_as_told()
