"""The ``retain`` need: a seeded sample of every client's retained data (``query.retain_data``).

At most ``methods.retain_per_client`` samples from each active client: a privacy cost the
run records (figure ``samples``).
"""

from __future__ import annotations

import numpy as np
from flwr.app import RecordDict

from fedforget import protocol as P
from fedforget.data.sources import ArrayDataset
from fedforget.needs.base import (
    ClientHandler,
    ClientView,
    Gathered,
    GatherStep,
    Need,
    register_need,
)
from fedforget.needs.records import data_in


@register_need
class RetainNeed(Need):
    """A retained sample from every active client (figure: ``samples``)."""

    name = "retain"
    order = 20
    summary = "a seeded sample of every client's retained data (query.retain_data)"

    def gather(self, step: GatherStep) -> Gathered:
        super().gather(step)
        per_client = self.parts.settings.retain_per_client
        config = self.parts.make_config(**{P.RETAIN_SAMPLES: per_client})
        messenger = self.parts.messenger
        nodes = messenger.active_nodes(step.grid)
        record = RecordDict({P.CONFIG: config})
        replies = messenger.query(step.grid, nodes, P.RETAIN_DATA, record)
        retain = ArrayDataset.concatenate([data_in(reply.content[P.DATA]) for reply in replies])
        self.step_figures = {"samples": len(retain)}
        return Gathered(request={"retain": retain})

    @classmethod
    def client_handlers(cls) -> dict[str, ClientHandler]:
        return {P.RETAIN_DATA: _retain_data}


def _retain_data(view: ClientView) -> object:
    """A seeded sample of the retained local data (the same samples in every step)."""
    data = view.retained_data()
    limit = int(view.message.content[P.CONFIG][P.RETAIN_SAMPLES])
    rng = np.random.default_rng(view.config.seed + view.partition_id)
    keep = np.sort(rng.choice(len(data), min(limit, len(data)), replace=False))
    return view.data_reply(data.subset(keep))
