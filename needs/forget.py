"""The ``forget`` need: D_f, sent by the deleting clients (paper 000's server receives it).

A deleting client sends its D_f with the request itself, in the training (or status) reply
that reports it, when the round's config asks (``attach-forget``: the server unlearns on D_f);
the step then needs no round trip. A node that did not is asked with ``query.forget_data``;
a node that fails then keeps its request and reports it again in the next round.
"""

from __future__ import annotations

from logging import INFO

from flwr.app import RecordDict
from flwr.common.logger import log

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
class ForgetNeed(Need):
    """D_f from the requesting clients (figure: ``samples_received``)."""

    name = "forget"
    order = 10
    summary = "D_f, sent by the deleting clients with their request (query.forget_data)"
    rides_on_requests = True

    def gather(self, step: GatherStep) -> Gathered:
        """D_f of the nodes that sent it; the step goes on with those nodes.

        Raises
        ------
        RuntimeError
            When no requesting node sent its data.
        """
        super().gather(step)
        ledger, messenger = self.parts.ledger, self.parts.messenger
        sent = {n: ledger.forget_sent.pop(n) for n in step.nodes if n in ledger.forget_sent}
        with_requests = sum(d.x.nbytes + d.y.nbytes for d in sent.values())
        asked = [n for n in step.nodes if n not in sent]
        if asked:
            record = RecordDict({P.CONFIG: self.deletion_config(asked)})
            for reply in messenger.query(step.grid, asked, P.FORGET_DATA, record):
                sent[reply.metadata.src_node_id] = data_in(reply.content[P.DATA])
        if not sent:
            raise RuntimeError("no requesting client sent its data for unlearning")
        forget = ArrayDataset.concatenate([sent[n] for n in sorted(sent, key=messenger.order_key)])
        self.step_figures = {"samples_received": len(forget)}
        clients = sorted(ledger.client_of(n) for n in sent)
        log(INFO, "deletion: D_f gathered, %d samples from clients %s", len(forget), clients)
        return Gathered(
            request={"forget": forget}, nodes=sorted(sent), bytes_from_clients=with_requests
        )

    @classmethod
    def client_handlers(cls) -> dict[str, ClientHandler]:
        return {P.FORGET_DATA: _forget_data}


def _forget_data(view: ClientView) -> object:
    """Send D_f^i to the server, as paper 000 gathers D_f there for unlearning."""
    return view.data_reply(view.forget_data())
