"""The data needs one strategy serves: its method's, or every ``compare`` branch's.

A :class:`NeedSet` holds one instance of each :class:`~fedforget.needs.Need` the served
methods declare and speaks for them to the strategy: the entries and messages of a FedAvg
round, the replies' share of each need, the gathering at a deletion (in the needs' order),
and their figures. The strategy itself never names a need.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, RecordDict

from fedforget import protocol as P
from fedforget.needs import NEEDS, Gathered, GatherStep, Need, ServerParts, ordered
from fedforget.unlearning import Unlearner

NO_TRAINING_PHASES = frozenset({"reference"})
"""Phases whose rounds serve no need: the retrain reference trains the model alone."""


class NeedSet:
    """The needs of ``unlearners`` (see the module docstring).

    Parameters
    ----------
    unlearners : iterable of Unlearner
        The methods served (none for the baselines).
    parts : ServerParts
        The strategy's parts, handed to every need.
    attach_forget : bool
        Whether the clients may send needs' data with their requests (the server unlearns).
    """

    def __init__(
        self, unlearners: Iterable[Unlearner], parts: ServerParts, attach_forget: bool = True
    ) -> None:
        self.parts = parts
        self.attach_forget = attach_forget
        self.unlearners: list[Unlearner] = []
        self.needs: dict[str, Need] = {}
        self.shared_model = False
        """The trained model serves several ``compare`` branches (hooks leave it as it is)."""
        self.serve(unlearners)

    def serve(self, unlearners: Iterable[Unlearner]) -> None:
        """Also serve ``unlearners`` (``compare``'s base keeps what any branch needs)."""
        self.unlearners += [u for u in unlearners if u not in self.unlearners]
        wanted = {name for u in self.unlearners for name in u.needs}
        for name in ordered(wanted | self.needs.keys()):
            if name not in self.needs:
                self.needs[name] = NEEDS.lookup(name)(self.parts)
        self.needs = {name: self.needs[name] for name in ordered(self.needs)}

    def __contains__(self, name: object) -> bool:
        return name in self.needs

    # ------------------------------------------------------------------ FedAvg rounds
    def round_entries(self, phase: str) -> dict[str, Any]:
        """A round's config entries: the needs the clients work for, and whether a
        request should carry its data (``attach-forget``)."""
        attach = self.attach_forget and any(n.rides_on_requests for n in self.needs.values())
        entries: dict[str, Any] = {P.ATTACH_FORGET: int(attach and self._serving(phase))}
        training = {name: self._owner(name) for name in self._training(phase)}
        if training:
            entries[P.TRAINING_NEEDS] = json.dumps(training)
            entries[P.SHARED_MODEL] = int(self.shared_model)
        return entries

    def round_messages(
        self,
        record: RecordDict,
        nodes: list[int],
        rng: random.Random,
        message_type: str,
        phase: str,
    ) -> list[Message] | None:
        """The round's training messages when a need shapes them (``None``: none does)."""
        for name in self._training(phase):
            messages = self.needs[name].round_messages(record, nodes, rng, message_type)
            if messages is not None:
                return messages
        return None

    def note_round(
        self, phase: str, server_round: int, start: ArrayRecord, replies: list[Message]
    ) -> None:
        """Each need's share of a round's good replies, before FedAvg aggregates them."""
        if self._serving(phase):
            for need in self.needs.values():
                need.note_round(phase, server_round, start, replies)

    def stop_training(self) -> None:
        """From now on no round serves a need (the retrain reference)."""
        self.attach_forget = False
        self.needs = {}

    def take_over(self, parent: NeedSet) -> None:
        """Continue from ``parent``'s needs' state (a ``compare`` branch from its base)."""
        for name, need in self.needs.items():
            if name in parent.needs:
                need.take_over(parent.needs[name])

    def _serving(self, phase: str) -> bool:
        return phase not in NO_TRAINING_PHASES

    def _training(self, phase: str) -> list[str]:
        if not self._serving(phase):
            return []
        return [name for name, need in self.needs.items() if need.trains]

    def _owner(self, name: str) -> str:
        """The served method whose training-time hook keeps the need's data ("" if none)."""
        return next((u.name for u in self.unlearners if u.hook_need == name), "")

    # ------------------------------------------------------------------ the deletion
    @property
    def completes_first(self) -> bool:
        """Whether the clients must drop D_f before the unlearner runs."""
        return any(need.completes_first for need in self.needs.values())

    def gather(self, step: GatherStep, wanted: Iterable[str] | None = None) -> Gathered:
        """Every need's gathering (or ``wanted``'s, which join the set), in order, merged.

        A need that narrows the step's nodes (``forget``: the nodes that sent D_f) does so
        for the needs after it, and in the result.
        """
        merged = Gathered()
        names = ordered(wanted) if wanted is not None else list(self.needs)
        for name in names:
            if name not in self.needs:  # asked for by the strategy itself (the GAN task)
                self.needs[name] = NEEDS.lookup(name)(self.parts)
                self.needs = {n: self.needs[n] for n in ordered(self.needs)}
            got = self.needs[name].gather(step)
            for key, value in got.request.items():
                if isinstance(value, dict) and isinstance(merged.request.get(key), dict):
                    merged.request[key] = {**merged.request[key], **value}
                else:
                    merged.request[key] = value
            merged.context.update(got.context)
            merged.bytes_from_clients += got.bytes_from_clients
            if got.nodes is not None:
                step.nodes = merged.nodes = list(got.nodes)
        return merged

    def figures(self) -> dict[str, dict[str, float]]:
        """Each need's figures (its training so far and the latest step)."""
        return {name: need.figures() for name, need in self.needs.items()}
