"""The recovery relay of paper 000 (IV.C.3): the weakest client repairs the unlearned model.

Every active client scores the model on its local data (``query.local_eval``); while the
weakest score is below ``min_accuracy`` and hops remain, the weakest client trains the model
(``train.relay``; when it fails, the next-weakest) and the server forwards the result.

:meth:`RecoveryRelay.run` is the seam: ``arrays in -> arrays out``; the policy (when to stop,
whom to ask) lives here alone.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.config import RecoveryConfig
from fedforget.report import RunObserver
from fedforget.strategies.ledger import DeletionLedger
from fedforget.strategies.messaging import NodeMessenger


class RecoveryRelay:
    """Relays the model through the weakest clients until all meet ``min_accuracy``.

    Parameters
    ----------
    settings : RecoveryConfig
        ``min_accuracy``, ``max_hops`` and the relay's local epochs.
    lr : float
        Learning rate of the relay's local training.
    messenger : NodeMessenger
        Sends the messages and records the nodes that fail.
    ledger : DeletionLedger
        Receives the hops, the weakest score and the relay trainings' replies.
    make_config : Callable[..., ConfigRecord]
        Builds each message's config.
    observer : RunObserver
        Receives the relay's progress.
    """

    def __init__(
        self,
        settings: RecoveryConfig,
        lr: float,
        messenger: NodeMessenger,
        ledger: DeletionLedger,
        make_config: Callable[..., ConfigRecord],
        observer: RunObserver,
    ) -> None:
        self.settings = settings
        self.lr = lr
        self.messenger = messenger
        self.ledger = ledger
        self.make_config = make_config
        self.observer = observer

    def run(self, grid: Grid, arrays: ArrayRecord) -> ArrayRecord:
        """The relayed model (``arrays`` itself when every client already meets the bar)."""
        limit = self.settings.max_hops
        for hop in range(limit + 1):
            scores = self.local_scores(grid, arrays)
            if not scores:
                return arrays
            weakest = min(scores, key=scores.__getitem__)
            self.ledger.record.relay_hops = hop
            self.ledger.record.relay_min_accuracy = scores[weakest]
            self.observer.progress("recovery", hop, limit, {"min_accuracy": scores[weakest]})
            if scores[weakest] >= self.settings.min_accuracy or hop == limit:
                return arrays
            arrays = self.hop(grid, scores, arrays)
        return arrays

    def local_scores(self, grid: Grid, arrays: ArrayRecord) -> dict[int, float]:
        """Node id -> local accuracy of ``arrays``, for the clients that hold data."""
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: self.make_config()})
        nodes = self.messenger.active_nodes(grid)
        replies = self.messenger.query(grid, nodes, P.LOCAL_EVAL, record)
        return {
            reply.metadata.src_node_id: float(reply.content[P.METRICS][P.ACCURACY])
            for reply in replies
            if int(reply.content[P.METRICS][P.NUM_EXAMPLES]) > 0
        }

    def hop(self, grid: Grid, scores: dict[int, float], arrays: ArrayRecord) -> ArrayRecord:
        """Train at the weakest node; when it fails, at the next-weakest, and so on."""
        for node in sorted(scores, key=scores.__getitem__):
            trained = self.train_at(grid, node, arrays)
            if trained is not None:
                return trained
        return arrays

    def train_at(self, grid: Grid, node: int, arrays: ArrayRecord) -> ArrayRecord | None:
        """``node``'s relay training of ``arrays``; ``None`` when it failed."""
        config = self.make_config(
            **{P.EPOCHS: self.settings.local_epochs, P.LEARNING_RATE: self.lr}
        )
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        replies = self.messenger.query(grid, [node], P.RELAY_TRAIN, record)
        if not replies:
            return None
        self.ledger.note_train_reply(replies[0])
        return replies[0].content[P.ARRAYS]
