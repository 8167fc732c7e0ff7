"""The ``generator`` need: the federation's GAN, trained by the clients next to the classifier.

MuGAN (paper 002 section 3.2) draws from the class-conditional GAN the federation trains
alongside its classifier: ``gan.generator_clients`` of each round's clients also receive the
GAN in their training message (record :data:`~fedforget.protocol.GAN`), train it on their
data and send it back; the server averages the GANs apart from the model (FedAvg). At the
deletion the unlearner receives the averaged GAN: no real sample reaches the server. Figures:
``training_client_seconds`` (the clients' compute on the GAN) and ``bytes`` (its size each
way per client and round).
"""

from __future__ import annotations

import random

from flwr.app import ArrayRecord, Message, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from fedforget import protocol as P
from fedforget.gan import build_conditional_gan, train_gan
from fedforget.needs.base import ClientView, ClientWork, Gathered, GatherStep, Need, register_need
from fedforget.needs.records import messages_to


@register_need
class GeneratorNeed(Need):
    """The clients' averaged conditional GAN (figures: ``training_client_seconds``, ``bytes``)."""

    name = "generator"
    order = 50
    summary = "the federation's class-conditional GAN, trained by the clients alongside"
    trains = True

    def __init__(self, parts) -> None:
        super().__init__(parts)
        self.arrays: ArrayRecord | None = None
        self.client_seconds = 0.0
        self.bytes = 0

    def current(self) -> ArrayRecord:
        """The federation's GAN now (its initial weights before the first round).

        Raises
        ------
        RuntimeError
            Without a GAN factory.
        """
        if self.arrays is None:
            self.arrays = ArrayRecord(self._build().state_dict())
            self.bytes = sum(a.numpy().nbytes for a in self.arrays.values())
        return self.arrays

    def _build(self):
        if self.parts.build_gan is None:
            raise RuntimeError("the 'generator' need requires a GAN factory (build_gan)")
        return self.parts.build_gan()

    def round_messages(
        self, record: RecordDict, nodes: list[int], rng: random.Random, message_type: str
    ) -> list[Message]:
        """A round's training messages: ``gan.generator_clients`` of the nodes get the GAN."""
        count = self.parts.settings.generator_clients
        # in client order: node ids change from run to run (before a node's first reply its
        # client id is unknown, so the first round's choice still follows the node ids)
        ordered = sorted(nodes, key=self.parts.messenger.order_key)
        chosen = set(rng.sample(ordered, min(count, len(ordered))))
        with_gan = RecordDict({**dict(record), P.GAN: self.current()})
        return [
            *messages_to(record, [n for n in nodes if n not in chosen], message_type),
            *messages_to(with_gan, sorted(chosen), message_type),
        ]

    def note_round(self, phase, server_round, start, replies) -> None:
        """FedAvg of the clients' GANs, taken out of the replies before the model's."""
        records = []
        for reply in replies:
            if P.GAN not in reply.content:
                continue
            metrics = reply.content[P.METRICS]
            self.client_seconds += float(metrics[P.GAN_SECONDS])
            records.append(RecordDict({P.GAN: reply.content[P.GAN], P.METRICS: metrics}))
            del reply.content[P.GAN]
        if records:
            self.arrays = aggregate_arrayrecords(records, P.NUM_EXAMPLES)

    def training_figures(self) -> dict[str, float]:
        return {"training_client_seconds": self.client_seconds, "bytes": self.bytes}

    def take_over(self, parent: GeneratorNeed) -> None:
        self.arrays = parent.arrays
        self.client_seconds = parent.client_seconds
        self.bytes = parent.bytes

    def gather(self, step: GatherStep) -> Gathered:
        super().gather(step)
        gan = self._build()
        gan.load_state_dict(self.current().to_torch_state_dict())
        return Gathered(request={"generator": gan.eval()})

    @classmethod
    def client_training(cls, view: ClientView, entries: dict[str, str]) -> ClientWork:
        """A client sent the GAN trains it after the model, on the same data."""
        if P.GAN not in view.message.content:
            return ClientWork(finish=lambda model: ({}, {P.GAN_SECONDS: 0.0}, 0))

        def finish(model) -> tuple[dict, dict, int]:
            config = view.config
            data, ids = view.training_data()
            gan = build_conditional_gan(view.num_classes, data.x.shape[1:], width=config.gan.width)
            gan.load_state_dict(view.message.content[P.GAN].to_torch_state_dict())
            result = train_gan(
                gan,
                data,
                epochs=config.gan.epochs,
                lr=config.gan.lr,
                batch_size=config.gan.batch_size,
                seed=view.round_seed,
                device=view.device,
            )
            passes = config.gan.epochs * int(view.deleted_mask(ids).sum())
            records = {P.GAN: ArrayRecord(gan.cpu().state_dict())}
            return records, {P.GAN_SECONDS: result.seconds}, passes

        return ClientWork(finish=finish)
