"""The ``history`` need: the per-round client updates the server kept during training.

FedEraser's calibration replays them. The server keeps each FedAvg round's updates
(``local - global``, per client) of the federated phase; the unlearner receives them all,
and the run records their storage (figure ``bytes``).
"""

from __future__ import annotations

from flwr.app import ArrayRecord, Message

from fedforget import protocol as P
from fedforget.federated import ClientUpdate, HistoryRound, as_history
from fedforget.needs.base import Gathered, GatherStep, Need, register_need
from fedforget.needs.records import numpy_state


def client_update(reply: Message) -> ClientUpdate:
    """A client's trained weights and its sample count, from its training reply."""
    metrics = reply.content[P.METRICS]
    return ClientUpdate(
        numpy_state(reply.content[P.ARRAYS]),
        int(metrics[P.NUM_EXAMPLES]),
        int(metrics[P.PARTITION_ID]),
    )


@register_need
class HistoryNeed(Need):
    """The stored client updates of every FedAvg round so far (figure: ``bytes``)."""

    name = "history"
    order = 30
    summary = "the per-round client updates the server kept during training"

    def __init__(self, parts) -> None:
        super().__init__(parts)
        self.rounds: list[HistoryRound] = []

    def note_round(
        self, phase: str, server_round: int, start: ArrayRecord, replies: list[Message]
    ) -> None:
        if phase == "federated":
            trained = [client_update(reply) for reply in replies]
            self.rounds.append(as_history(server_round, numpy_state(start), trained))

    def take_over(self, parent: HistoryNeed) -> None:
        self.rounds = list(parent.rounds)

    def gather(self, step: GatherStep) -> Gathered:
        super().gather(step)
        history = tuple(self.rounds)
        self.step_figures = {"bytes": sum(h.nbytes() for h in history)}
        return Gathered(request={"history": history})
