"""The clients' part of a deletion beyond what the unlearner needs.

- ``query.deletion_status``: the clients a round did not sample report their requests;
- ``query.deletion_complete``: the clients drop D_f for good (and what was made from it);
- client-side unlearning: the model travels along the requesting clients, each unlearning
  its own D_f (``train.unlearn``), so no D_f sample leaves its node;
- ``query.forget_eval``: the deleting nodes score models on their own deleted samples and
  send back only the accuracies (a deployment's server holds no D_f to measure);
- ``query.verify``: the deleting clients verify the final model on their machines.

What a method needs from the clients (D_f, retained samples, ...) is gathered by the data
needs (:mod:`fedforget.needs`, through :class:`~fedforget.strategies.needset.NeedSet`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from logging import INFO

from flwr.app import ArrayRecord, ConfigRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.recovery import ClientScore
from fedforget.report import RunObserver
from fedforget.strategies.ledger import DeletionLedger
from fedforget.strategies.messaging import (
    NodeMessenger,
    PendingQuery,
    messages_to,
)
from fedforget.strategies.relay import scores_in
from fedforget.strategies.settings import StrategySettings

ConfigFactory = Callable[..., ConfigRecord]


@dataclass
class Completion:
    """The order to drop D_f, sent to ``nodes`` (or riding on their next message); its
    replies are collected later."""

    pending: PendingQuery
    nodes: list[int]


"""``make_config(**extra)``: a message config with the run's entries and ``extra``."""


class Gathering:
    """The deletion's exchanges with the clients.

    Parameters
    ----------
    settings : StrategySettings
        The deletion's description (classes, image shape, whether deleting clients leave)
        and how many retained samples each client sends.
    messenger : NodeMessenger
        Sends the messages and records the nodes that fail.
    ledger : DeletionLedger
        Receives what was gathered (sizes, training replies) and names the requests.
    make_config : ConfigFactory
        Builds each message's config.
    observer : RunObserver
        Receives the client-side unlearning's progress.
    """

    def __init__(
        self,
        settings: StrategySettings,
        messenger: NodeMessenger,
        ledger: DeletionLedger,
        make_config: ConfigFactory,
        observer: RunObserver,
    ) -> None:
        self.settings = settings
        self.messenger = messenger
        self.ledger = ledger
        self.make_config = make_config
        self.observer = observer

    def poll_deletion_requests(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        round_config: Callable[[], ConfigRecord],
        skip: set[int],
    ) -> None:
        """Ask the clients a round did not sample (``skip``) for their deletion requests.

        A client reports its requests in its training reply; with ``fraction_train < 1`` the
        clients left out would report theirs only when next sampled, and a class deletion
        would reach a few clients only. ``query.deletion_status`` carries the new global
        model (the one a requesting client keeps as its verification reference).
        """
        others = [n for n in self.messenger.active_nodes(grid) if n not in skip]
        if not others:
            return
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: round_config()})
        for reply in self.messenger.query(grid, others, P.DELETION_STATUS, record):
            self.ledger.note_train_reply(reply)

    def deletion_config(self, nodes: list[int], **extra: object) -> ConfigRecord:
        """The config of the deletion's messages: its round and the requests it carries out."""
        return self.make_config(**self.ledger.deletion_entries(nodes), **extra)

    def complete_deletion(self, grid: Grid, nodes: list[int]) -> None:
        """The nodes drop D_f for good; in ``client`` mode they also leave the federation."""
        self.finish_completion(grid, self.send_completion(grid, nodes))

    def send_completion(
        self,
        grid: Grid,
        nodes: list[int],
        scoring: tuple[ArrayRecord, list[int]] | None = None,
        ride: bool = False,
    ) -> Completion:
        """Send ``query.deletion_complete`` to ``nodes``; :meth:`finish_completion` collects.

        The message names the deletion's mode and classes: a node drops what was made from
        the deleted data too (what a method's training-time hook kept). ``scoring`` (a model and the
        relay's candidates) has the candidates score that model on their local data: a
        deleting candidate in the same message, once D_f is gone, the others with
        ``query.local_eval`` (one message per node in flight, never two). With ``ride`` the
        order rides on each node's next message instead (:meth:`NodeMessenger.carry_order`),
        a round trip less on a deployment: the caller knows that a message goes to every
        node before the step's model is trained on.
        """
        classes = json.dumps(list(self.ledger.deletion_classes(nodes)))
        extra = {P.MODE: self.ledger.deletion_mode(nodes).name, P.CLASSES: classes}
        config = self.deletion_config(nodes, **extra)
        model, candidates = scoring if scoring is not None else (None, [])
        if ride:
            self.messenger.carry_order(nodes, config)
            messages = []
            if model is not None:
                evaluation = RecordDict({P.ARRAYS: model, P.CONFIG: self.make_config()})
                messages = messages_to(evaluation, candidates, P.LOCAL_EVAL)
            return Completion(self.messenger.send_messages(grid, messages), list(nodes))
        scores = [n for n in nodes if n in candidates]
        plain = [n for n in nodes if n not in scores]
        messages = messages_to(RecordDict({P.CONFIG: config}), plain, P.DELETION_COMPLETE)
        if model is not None:
            with_model = RecordDict({P.ARRAYS: model, P.CONFIG: config})
            messages += messages_to(with_model, scores, P.DELETION_COMPLETE)
            others = [n for n in candidates if n not in nodes]
            evaluation = RecordDict({P.ARRAYS: model, P.CONFIG: self.make_config()})
            messages += messages_to(evaluation, others, P.LOCAL_EVAL)
        return Completion(self.messenger.send_messages(grid, messages), list(nodes))

    def finish_completion(self, grid: Grid, completion: Completion) -> dict[int, ClientScore]:
        """Wait for the drop order's replies (faults recorded); in ``client`` mode the deleting
        nodes leave the federation. Returns the candidates' scores (see :meth:`send_completion`).
        """
        replies = self.messenger.receive(grid, completion.pending)
        kind = P.DELETION_COMPLETE
        self.ledger.confirm_deletion(
            (r.metadata.src_node_id for r in replies if r.metadata.message_type == kind),
            riding=[n for n in completion.nodes if n in self.messenger.orders],
        )
        if self.settings.clients_leave:
            self.messenger.exclude(completion.nodes)
        return scores_in(replies)

    def unlearn_on_clients(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        initial: ArrayRecord,
        nodes: list[int],
        seed: int,
    ) -> tuple[ArrayRecord, list[int]]:
        """Each requesting client unlearns its own D_f, in turn (``train.unlearn``).

        The model travels along the requesting clients like the recovery relay: each one
        runs the unlearner on the model it receives and its own D_f, so the result has
        forgotten every client's part and no D_f sample leaves its node. A client that fails
        keeps its request for a later round.

        Returns
        -------
        tuple
            The model after the last client, and the nodes that unlearned.
        """
        done = []
        nodes = sorted(nodes, key=self.messenger.order_key)  # node ids change from run to run
        for step, node in enumerate(nodes):
            extra = {
                P.MODE: self.ledger.deletion_mode(nodes).name,
                P.CLASSES: json.dumps(list(self.ledger.deletion_classes(nodes))),
                P.SEED: seed,
            }
            config = self.deletion_config([node], **extra)
            record = RecordDict({P.ARRAYS: arrays, P.INITIAL_ARRAYS: initial, P.CONFIG: config})
            replies = self.messenger.query(grid, [node], P.LOCAL_UNLEARN, record)
            self.observer.progress("client unlearning", step + 1, len(nodes), {})
            if replies:
                arrays = replies[0].content[P.ARRAYS]
                seconds = float(replies[0].content[P.METRICS][P.COMPUTE_SECONDS])
                self.ledger.compute_seconds += seconds
                done.append(node)
                client = self.ledger.client_of(node)
                log(INFO, "deletion: client %d unlearned its own D_f (%.1f s)", client, seconds)
        return arrays, done

    def node_forget_accuracy(
        self, grid: Grid, nodes: list[int], models: dict[str, ArrayRecord], step: int | None = None
    ) -> dict[str, float]:
        """The deleting ``nodes`` score ``models`` (phase -> weights) on their deleted samples.

        One ``query.forget_eval`` carries every model; each node replies with its accuracies
        and sample count only. The sample-weighted accuracies go into the deletion record
        (``node_forget_accuracy``), next to the phases measured before. A node that fails is
        recorded as a fault and left out of the weighting.
        """
        record = RecordDict({**models, P.CONFIG: self.make_config()})
        replies = self.messenger.query(grid, nodes, P.FORGET_EVAL, record)
        counts = [int(reply.content[P.METRICS][P.NUM_EXAMPLES]) for reply in replies]
        total = sum(counts)
        found = {}
        for phase in models:
            key = f"{P.ACCURACY}:{phase}"
            weighted = [
                (float(reply.content[P.METRICS][key]), count)
                for reply, count in zip(replies, counts, strict=True)
                if count and key in reply.content[P.METRICS]
            ]
            if weighted:
                found[phase] = sum(a * c for a, c in weighted) / sum(c for _, c in weighted)
        self.ledger.note_node_forget_accuracy(found, total, step)
        shown = ", ".join(f"{phase} {value:.1%}" for phase, value in found.items())
        log(
            INFO,
            "deletion: the deleting nodes' own D_f accuracy (%d samples, %d nodes): %s",
            total,
            len(replies),
            shown or "none measured",
        )
        return found

    def verification(
        self, grid: Grid, arrays: ArrayRecord, method: str, clients: int, folder: str = ""
    ) -> list[dict]:
        """Ask the first ``clients`` deleting clients to verify ``arrays`` with ``method``.

        Each runs the verifier on its own node (``query.verify``) and replies with its report;
        a client that fails is recorded with its error and does not stop the run.

        Returns
        -------
        list of dict
            One report per client: ``client`` (partition id), ``method``, then the verifier's
            JSON object, or ``error``.
        """
        nodes = sorted(self.ledger.record.nodes, key=lambda n: self.ledger.partition_of.get(n, n))
        nodes = nodes[:clients]
        if not nodes:
            return []
        extra = {P.VERIFY_DIR: folder} if folder else {}
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: self.make_config(**extra)})
        self.observer.progress("verification", 0, len(nodes), {})
        faults = self.ledger.faults
        known = len(faults)
        replies = self.messenger.query(grid, nodes, P.VERIFY, record)
        reports = [
            {
                **json.loads(str(reply.content[P.CONFIG][P.REPORT])),
                "client": self.ledger.client_of(reply.metadata.src_node_id),
                "method": method,
            }
            for reply in replies
        ]
        reports += [
            {"client": fault["client"], "method": method, "error": fault["error"]}
            for fault in faults[known:]
        ]
        self.observer.progress("verification", len(nodes), len(nodes), {})
        return sorted(reports, key=lambda report: report["client"])
