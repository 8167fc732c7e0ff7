"""MuGAN's federated generator (paper 002 section 3.2): a GAN trained next to the classifier.

For unlearners with the ``generator`` need, ``generator_clients`` of each round's clients
also train the federation's conditional GAN (its arrays travel in the training message under
:data:`~fedforget.protocol.GAN`); the server averages their GANs (FedAvg) before it averages
the classifiers. At the deletion the unlearner draws from the averaged GAN.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedforget import protocol as P
from fedforget.gan import ConditionalGan
from fedforget.strategies.ledger import DeletionRecord
from fedforget.strategies.messaging import messages_to


class GeneratorCoTraining:
    """The clients' GAN: which clients train it, and its FedAvg.

    Parameters
    ----------
    build_gan : Callable[[], ConditionalGan] or None
        Makes the federation's conditional GAN (its initial weights).
    clients : int
        How many of a round's clients also train the GAN.
    record : DeletionRecord
        Receives the GAN's size and the clients' compute spent on it.
    """

    def __init__(
        self,
        build_gan: Callable[[], ConditionalGan] | None,
        clients: int,
        record: DeletionRecord,
    ) -> None:
        self.build_gan = build_gan
        self.clients = clients
        self.record = record
        self.arrays: ArrayRecord | None = None

    def current(self) -> ArrayRecord:
        """The federation's GAN now (its initial weights before the first round).

        Raises
        ------
        RuntimeError
            Without a GAN factory.
        """
        if self.arrays is None:
            if self.build_gan is None:
                raise RuntimeError("the 'generator' need requires a GAN factory (build_gan)")
            self.arrays = ArrayRecord(self.build_gan().state_dict())
            self.record.generator_bytes = sum(a.numpy().nbytes for a in self.arrays.values())
        return self.arrays

    def train_messages(
        self,
        record: RecordDict,
        nodes: list[int],
        rng: random.Random,
        message_type: str = P.TRAIN,
    ) -> list[Message]:
        """A round's training messages: ``clients`` of the nodes also receive the GAN."""
        chosen = set(rng.sample(nodes, min(self.clients, len(nodes))))
        with_gan = RecordDict({**dict(record), P.GAN: self.current()})
        return [
            *messages_to(record, [n for n in nodes if n not in chosen], message_type),
            *messages_to(with_gan, sorted(chosen), message_type),
        ]

    def aggregate(self, replies: list[Message]) -> None:
        """FedAvg of the clients' GANs, taken out of the replies before the model's."""
        records = []
        for reply in replies:
            if P.GAN not in reply.content:
                continue
            metrics = reply.content[P.METRICS]
            self.record.generator_client_seconds += float(metrics[P.GAN_SECONDS])
            records.append(RecordDict({P.GAN: reply.content[P.GAN], P.METRICS: metrics}))
            del reply.content[P.GAN]
        if records:
            self.arrays = aggregate_arrayrecords(records, P.NUM_EXAMPLES)

    def generator(self) -> ConditionalGan:
        """The clients' averaged GAN, ready to draw from (the ``generator`` need)."""
        if self.build_gan is None:
            raise RuntimeError("the 'generator' need requires a GAN factory (build_gan)")
        gan = self.build_gan()
        gan.load_state_dict(self.current().to_torch_state_dict())
        return gan.eval()

    def take_over(self, parent: GeneratorCoTraining) -> None:
        """Continue from ``parent``'s GAN and its costs so far (a ``compare`` branch)."""
        self.arrays = parent.arrays
        self.record.generator_client_seconds = parent.record.generator_client_seconds
        self.record.generator_bytes = parent.record.generator_bytes
