"""Needs met by a method's own work on the clients during training (a training-time hook).

QuickDrop distils each client's data into a few synthetic images while it trains; FedAU
trains an auxiliary head on the deleting clients. Both are one mechanism: the method's
:meth:`~fedforget.unlearning.Unlearner.training_hook` runs after each local step of every
FedAvg round, what it returns is kept on the client (``Context.state``, one slot per
``compare`` branch, with the method that owns it), and at the deletion the server asks the
clients for it (``query.<need>``) and hands it to the method as
:attr:`~fedforget.unlearning.UnlearningRequest.client_state` (by partition id). When a client
drops its D_f it keeps only what the method's
:meth:`~fedforget.unlearning.Unlearner.kept_after_deletion` says. Figures:
``training_client_seconds`` (the hook's compute) and ``bytes`` (what the server received).

A method with a client-side need of its own subclasses :class:`ClientStateNeed` with the
need's name (and whether the deleting clients alone hold it) and registers it.
"""

from __future__ import annotations

import json
from typing import ClassVar

from flwr.app import Array, ArrayRecord, Message, RecordDict

from fedforget import protocol as P
from fedforget.data.modes import deletion_mode
from fedforget.needs.base import (
    ClientHandler,
    ClientView,
    ClientWork,
    Gathered,
    GatherStep,
    Need,
    register_need,
)
from fedforget.needs.records import numpy_state
from fedforget.unlearning import HookSetup


class ClientStateNeed(Need):
    """What a method's training-time hook kept on the clients, asked for at the deletion.

    ``from_deleting`` says whether only the deleting clients hold it (FedAU's heads) or every
    client (QuickDrop's synthetic sets).
    """

    trains = True
    from_deleting: ClassVar[bool] = False

    def __init__(self, parts) -> None:
        super().__init__(parts)
        self.client_seconds = 0.0

    @classmethod
    def message_type(cls) -> str:
        """The query that asks the clients for the kept arrays (``query.<need>``, with
        underscores for dashes: Flower's actions are identifiers)."""
        return f"query.{cls.name.replace('-', '_')}"

    @classmethod
    def seconds_key(cls) -> str:
        """The training replies' metric of the hook's seconds."""
        return f"{P.HOOK_SECONDS}:{cls.name}"

    # ------------------------------------------------------------------ server
    def note_round(self, phase, server_round, start, replies) -> None:
        key = self.seconds_key()
        self.client_seconds += sum(float(r.content[P.METRICS].get(key, 0.0)) for r in replies)

    def training_figures(self) -> dict[str, float]:
        return {"training_client_seconds": self.client_seconds}

    def take_over(self, parent: ClientStateNeed) -> None:
        self.client_seconds = parent.client_seconds

    def gather(self, step: GatherStep) -> Gathered:
        super().gather(step)
        messenger = self.parts.messenger
        if self.from_deleting:
            nodes, config = step.nodes, self.deletion_config(step.nodes)
        else:
            nodes, config = messenger.active_nodes(step.grid), self.parts.make_config()
        replies = messenger.query(
            step.grid, nodes, self.message_type(), RecordDict({P.CONFIG: config})
        )
        kept = {
            int(reply.content[P.METRICS][P.PARTITION_ID]): numpy_state(reply.content[P.ARRAYS])
            for reply in replies
            if reply.content[P.ARRAYS]
        }
        self.step_figures = {
            "bytes": sum(a.nbytes for state in kept.values() for a in state.values())
        }
        return Gathered(request={"client_state": {self.name: dict(sorted(kept.items()))}})

    # ------------------------------------------------------------------ client
    @classmethod
    def client_handlers(cls) -> dict[str, ClientHandler]:
        return {cls.message_type(): cls._send_kept}

    @classmethod
    def _send_kept(cls, view: ClientView) -> Message:
        found = view.kept(cls.name)
        state = found[0] if found is not None else {}
        arrays = ArrayRecord(array_dict={key: Array(value) for key, value in state.items()})
        return view.reply({P.ARRAYS: arrays}, {})

    @classmethod
    def client_training(cls, view: ClientView, entries: dict[str, str]) -> ClientWork:
        """The owner's hook on this client's training data (nothing when it has no hook)."""
        owner = entries[cls.name]
        config = view.config
        data, ids = view.training_data()
        found = view.kept(cls.name)
        setup = HookSetup(
            data=data,
            deleting=view.deleted_mask(ids),
            kept=found[0] if found is not None and found[0] else None,
            num_classes=view.num_classes,
            mode=config.deletion_mode,
            forget_classes=tuple(config.deletion.forget_classes),
            client_seed=config.seed + view.partition_id,
            round_seed=view.round_seed,
            lr=config.train.lr,
            batch_size=config.train.resolved([len(data)]).batch_size,
            device=view.device,
            shared_model=bool(int(entries.get(P.SHARED_MODEL, "0"))),
        )
        hook = view.unlearner(owner).training_hook(setup)
        key = cls.seconds_key()
        if hook is None:
            return ClientWork(finish=lambda model: ({}, {key: 0.0}, 0))

        def finish(model) -> tuple[dict, dict, int]:
            kept = hook.kept()
            if kept is not None:
                view.keep(cls.name, kept, owner)
            return {}, {key: hook.spent_seconds()}, 0

        return ClientWork(hook=hook, finish=finish)

    @classmethod
    def client_deletion(cls, view: ClientView) -> None:
        """Keep only what the owner keeps once D_f is gone (the deletion's mode and classes)."""
        found = view.kept(cls.name)
        if found is None or not found[0]:
            return
        state, owner = found
        config = view.message.content[P.CONFIG]
        mode = deletion_mode(str(config[P.MODE]))
        classes = tuple(json.loads(str(config.get(P.CLASSES, "[]"))))
        remaining = view.unlearner(owner).kept_after_deletion(state, mode, classes)
        view.keep(cls.name, remaining, owner)


@register_need
class SyntheticNeed(ClientStateNeed):
    """The small synthetic sets every client distilled from its data while it trained."""

    name = "synthetic"
    order = 60
    summary = "every client's synthetic set, distilled while it trained (query.synthetic)"


@register_need
class AuxiliaryNeed(ClientStateNeed):
    """The auxiliary heads the deleting clients trained during learning."""

    name = "auxiliary"
    order = 70
    summary = "the deleting clients' auxiliary heads, trained during learning (query.auxiliary)"
    from_deleting = True


__all__ = ["AuxiliaryNeed", "ClientStateNeed", "SyntheticNeed"]
