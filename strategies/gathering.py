"""What an unlearner may see, gathered the federated way, and the clients' part of a deletion.

- D_f from the requesting clients (``query.forget_data``, as paper 000's server receives it);
- a sample of retained data from every client (``query.retain_data``);
- ``query.deletion_complete``: the clients drop D_f for good;
- the ``rounds`` need: every remaining client trains given weights locally (``train.local``);
- client-side unlearning: the model travels along the requesting clients, each unlearning
  its own D_f (``train.unlearn``), so no D_f sample leaves its node;
- ``query.forget_eval``: the deleting nodes score models on their own deleted samples and
  send back only the accuracies (a deployment's server holds no D_f to measure).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from logging import INFO

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.data.sources import ArrayDataset
from fedforget.federated import State
from fedforget.recovery import ClientScore
from fedforget.report import RunObserver
from fedforget.strategies.generator import GeneratorCoTraining
from fedforget.strategies.ledger import DeletionLedger
from fedforget.strategies.messaging import (
    NodeMessenger,
    PendingQuery,
    arrays_from,
    data_in,
    messages_to,
    numpy_state,
)
from fedforget.strategies.relay import scores_in
from fedforget.strategies.settings import StrategySettings
from fedforget.unlearning import ClientUpdate, HistoryRound, UnlearningRequest
from fedforget.unlearning.quickdrop import split_synthetic

ConfigFactory = Callable[..., ConfigRecord]


@dataclass
class Completion:
    """The order to drop D_f, sent to ``nodes``; its replies are collected later."""

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
        validation: ArrayDataset | None = None,
    ) -> None:
        self.validation = validation
        self.settings = settings
        self.messenger = messenger
        self.ledger = ledger
        self.make_config = make_config
        self.observer = observer

    def prepare(
        self,
        grid: Grid,
        needs: frozenset[str],
        nodes: list[int],
        history: tuple[HistoryRound, ...],
        generator: GeneratorCoTraining,
        scoring: tuple[ArrayRecord, list[int]] | None = None,
    ) -> tuple[UnlearningRequest, Completion]:
        """Gather what the unlearner ``needs``, then send the clients the order to drop D_f.

        ``history`` (the kept client updates) and ``generator`` (the clients' GAN) are what the
        server already holds; only the ``history`` and ``generator`` needs hand them over.
        The drop order is only sent (:meth:`send_completion`, with ``scoring``): the caller
        unlearns while the clients carry it out, and collects it with
        :meth:`finish_completion` before any client trains or scores again.
        """
        forget = None
        if "forget" in needs:
            forget, nodes = self.forget_data(grid, nodes)
        per_client = self.settings.retain_per_client
        retain = self.retain_data(grid, per_client) if "retain" in needs else None
        self.ledger.record.history_bytes = sum(h.nbytes() for h in history)
        synthetic = self.synthetic_sets(grid) if "synthetic" in needs else {}
        auxiliary = self.auxiliary_heads(grid, nodes) if "auxiliary" in needs else ()
        completion = self.send_completion(grid, nodes, scoring)
        leaving = tuple(self.ledger.record.clients) if self.settings.client_leaves else ()
        mode = self.ledger.deletion_mode(nodes)
        synthetic_forget = synthetic_retain = None
        if synthetic and mode in ("class", "client"):  # other modes: the unlearner refuses
            classes = self.ledger.deletion_classes(nodes)
            synthetic_forget, synthetic_retain = split_synthetic(synthetic, mode, classes, leaving)
        request = UnlearningRequest(
            forget=forget if forget is not None else empty_like(retain, self.settings.image_shape),
            num_classes=self.settings.num_classes,
            mode=self.ledger.deletion_mode(nodes),
            forget_classes=self.ledger.deletion_classes(nodes),
            retain=retain,
            history=history,
            leaving_clients=leaving,
            generator=generator.generator() if "generator" in needs else None,
            validation=self.validation,
            synthetic_forget=synthetic_forget,
            synthetic_retain=synthetic_retain,
            auxiliary_heads=auxiliary,
        )
        return request, completion

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

    def forget_data(self, grid: Grid, nodes: list[int]) -> tuple[ArrayDataset, list[int]]:
        """D_f from the requesting nodes, and the nodes that sent it.

        A node that sent its D_f with its request (in its training or status reply) is not
        asked again; the others are asked with ``query.forget_data``. A node that fails here
        keeps its request: it reports it again in the next round.

        Raises
        ------
        RuntimeError
            When no requesting node sent its data.
        """
        sent = {n: self.ledger.forget_sent.pop(n) for n in nodes if n in self.ledger.forget_sent}
        self.ledger.record.forget_bytes_with_requests = sum(
            d.x.nbytes + d.y.nbytes for d in sent.values()
        )
        asked = [n for n in nodes if n not in sent]
        if asked:
            record = RecordDict({P.CONFIG: self.deletion_config(asked)})
            for reply in self.messenger.query(grid, asked, P.FORGET_DATA, record):
                sent[reply.metadata.src_node_id] = data_in(reply.content[P.DATA])
        if not sent:
            raise RuntimeError("no requesting client sent its data for unlearning")
        forget = ArrayDataset.concatenate(
            [sent[n] for n in sorted(sent, key=self.messenger.order_key)]
        )
        self.ledger.record.forget_samples_received = len(forget)
        senders = sorted(sent)
        clients = sorted(self.ledger.client_of(n) for n in senders)
        log(INFO, "deletion: D_f gathered, %d samples from clients %s", len(forget), clients)
        return forget, senders

    def retain_data(self, grid: Grid, per_client: int) -> ArrayDataset:
        """A sample of ``per_client`` retained samples from every active client."""
        config = self.make_config(**{P.RETAIN_SAMPLES: per_client})
        nodes = self.messenger.active_nodes(grid)
        replies = self.messenger.query(grid, nodes, P.RETAIN_DATA, RecordDict({P.CONFIG: config}))
        retain = concatenate_data(replies)
        self.ledger.record.retain_samples = len(retain)
        return retain

    def synthetic_sets(self, grid: Grid) -> dict[int, ArrayDataset]:
        """The ``synthetic`` need: every active client's distilled set, by partition id."""
        record = RecordDict({P.CONFIG: self.make_config()})
        nodes = self.messenger.active_nodes(grid)
        replies = self.messenger.query(grid, nodes, P.SYNTHETIC_DATA, record)
        sets = {
            int(reply.content[P.METRICS][P.PARTITION_ID]): data_in(reply.content[P.DATA])
            for reply in replies
        }
        self.ledger.record.synthetic_bytes = sum(d.x.nbytes + d.y.nbytes for d in sets.values())
        return sets

    def auxiliary_heads(self, grid: Grid, nodes: list[int]) -> tuple[State, ...]:
        """The ``auxiliary`` need: the deleting ``nodes``' heads (FedAU), if they trained one."""
        record = RecordDict({P.CONFIG: self.deletion_config(nodes)})
        replies = self.messenger.query(grid, nodes, P.AUXILIARY_HEAD, record)
        heads = tuple(numpy_state(r.content[P.ARRAYS]) for r in replies if r.content[P.ARRAYS])
        self.ledger.record.auxiliary_bytes = sum(v.nbytes for h in heads for v in h.values())
        log(INFO, "deletion: %d auxiliary heads from %d deleting nodes", len(heads), len(nodes))
        return heads

    def complete_deletion(self, grid: Grid, nodes: list[int]) -> None:
        """The nodes drop D_f for good; in ``client`` mode they also leave the federation."""
        self.finish_completion(grid, self.send_completion(grid, nodes))

    def send_completion(
        self, grid: Grid, nodes: list[int], scoring: tuple[ArrayRecord, list[int]] | None = None
    ) -> Completion:
        """Send ``query.deletion_complete`` to ``nodes``; :meth:`finish_completion` collects.

        The message names the deletion's mode and classes: a node drops what was made from
        the deleted data (QuickDrop's synthetic images) too. ``scoring`` (a model and the
        relay's candidates) has the candidates score that model on their local data: a
        deleting candidate in the same message, once D_f is gone, the others with
        ``query.local_eval`` (one message per node in flight, never two).
        """
        classes = json.dumps(list(self.ledger.deletion_classes(nodes)))
        extra = {P.MODE: self.ledger.deletion_mode(nodes), P.CLASSES: classes}
        config = self.deletion_config(nodes, **extra)
        model, candidates = scoring if scoring is not None else (None, [])
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
            r.metadata.src_node_id for r in replies if r.metadata.message_type == kind
        )
        if self.settings.client_leaves:
            self.messenger.exclude(completion.nodes)
        return scores_in(replies)

    def client_training(self, grid: Grid) -> Callable[..., list[ClientUpdate]]:
        """The ``rounds`` need: every remaining client trains the given weights locally."""

        def train(state: dict[str, np.ndarray], epochs: int, lr: float) -> list[ClientUpdate]:
            config = self.make_config(**{P.EPOCHS: epochs, P.LEARNING_RATE: lr})
            arrays = arrays_from(state)
            record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
            nodes = self.messenger.active_nodes(grid)
            replies = self.messenger.query(grid, nodes, P.LOCAL_TRAIN, record)
            self.ledger.record.client_training_calls += 1
            for reply in replies:
                self.ledger.note_train_reply(reply)
            return [client_update(reply) for reply in replies]

        return train

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
        for step, node in enumerate(nodes):
            extra = {
                P.MODE: self.ledger.deletion_mode(nodes),
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
        self, grid: Grid, nodes: list[int], models: dict[str, ArrayRecord]
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
        self.ledger.record.node_forget_accuracy.update(found)
        self.ledger.record.node_forget_samples = max(self.ledger.record.node_forget_samples, total)
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
        faults = self.ledger.record.faults
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


def client_update(reply: Message) -> ClientUpdate:
    """A client's trained weights and its sample count, from its training reply."""
    metrics = reply.content[P.METRICS]
    return ClientUpdate(
        numpy_state(reply.content[P.ARRAYS]),
        int(metrics[P.NUM_EXAMPLES]),
        int(metrics[P.PARTITION_ID]),
    )


def concatenate_data(replies: Iterable[Message]) -> ArrayDataset:
    """The samples of several data replies as one dataset."""
    return ArrayDataset.concatenate([data_in(reply.content[P.DATA]) for reply in replies])


def empty_like(data: ArrayDataset | None, image_shape: tuple[int, ...]) -> ArrayDataset:
    """An empty D_f (of the federation's image shape) for methods that never receive it."""
    if data is None:
        return ArrayDataset(x=np.empty((0, *image_shape), np.float32), y=np.empty(0, np.int64))
    return data.subset(np.empty(0, dtype=np.int64))
