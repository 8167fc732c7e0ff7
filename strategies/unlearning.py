"""Flower strategies that run FedAvg, take deletion requests, unlearn and recover.

:class:`FederatedUnlearning` is a :class:`flwr.serverapp.strategy.FedAvg` whose ``start``
runs the usual rounds and, when clients report pending deletion requests in their train
replies, runs the deletion step between two rounds:

1. what the unlearner needs, gathered the federated way: ``query.forget_data`` to the
   requesting clients (D_f, as paper 000's server receives it), ``query.retain_data`` to every
   client (a sample of retained data), the per-round client updates kept during training;
2. ``query.deletion_complete``: the clients drop D_f for good (before any further training);
3. the unlearner (any :class:`fedforget.unlearning.Unlearner`) on the server's device; methods
   that train on the clients do so with ``train.local`` messages (on retained data only);
4. if the method includes it (paper 000's), the recovery relay (IV.C.3): ``query.local_eval``
   to every client, the weakest trains the model (``train.relay``), the server forwards it,
   until every client meets ``min_accuracy`` or ``max_hops`` is reached;

then FedAvg continues. :class:`Retrain` replaces step 3 by retraining from the initial
weights without the deleted data (baseline B1).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from logging import WARN
from typing import ClassVar

import numpy as np
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords, sample_nodes

from fedforget import protocol as P
from fedforget.config import RecoveryConfig
from fedforget.data.sources import ArrayDataset
from fedforget.federated import as_history
from fedforget.gan import ConditionalGan
from fedforget.models import ClassifierModel
from fedforget.report import RunObserver
from fedforget.stopping import pause
from fedforget.unlearning import (
    ClientUpdate,
    HistoryRound,
    Unlearner,
    UnlearningContext,
    UnlearningRequest,
)

ModelFactory = Callable[[], ClassifierModel]


@dataclass
class DeletionRecord:
    """What the deletion step did and how long each part took."""

    round: int = 0
    clients: list[int] = field(default_factory=list)
    forget_samples: int = 0
    unlearning_seconds: float = 0.0
    recovery_seconds: float = 0.0
    relay_hops: int = 0
    relay_min_accuracy: float | None = None
    forget_samples_received: int = 0
    retain_samples: int = 0
    history_bytes: int = 0
    client_training_calls: int = 0
    nodes: list[int] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    faults: list[dict] = field(default_factory=list)
    generator_client_seconds: float = 0.0
    generator_bytes: int = 0


@dataclass
class Bookkeeping:
    """Sample passes over deleted samples, before and after their deletion was carried out."""

    deleted_passes_before: int = 0
    deleted_passes_after: int = 0


class FederatedUnlearning(FedAvg):
    """FedAvg with deletion requests, server-side unlearning and a recovery relay.

    Parameters
    ----------
    unlearner : Unlearner
        The method run on the gathered D_f.
    build_model : Callable[[], ClassifierModel]
        Makes a fresh model of the federation's architecture.
    message_config : dict
        Entries added to every message's ``config`` (e.g. the run configuration).
    recovery : RecoveryConfig
        Relay settings.
    relay_lr : float
        Learning rate of the relay's local training.
    local_epochs, local_lr : int, float
        The federation's local training settings (for unlearners that train on the clients).
    retain_per_client : int
        Retained samples each client sends to methods that need a retained sample.
    num_classes, mode, forget_classes
        Describe the deletion to the unlearner.
    client_leaves : bool
        Whether deleting clients leave the federation (``client`` mode).
    observer : RunObserver, optional
        Receives progress, per-round and phase events.
    device : torch.device
        Where the server computes (unlearning).
    seed : int
        Seeds node sampling, the unlearner and the clients' batch order.
    build_gan : Callable[[], ConditionalGan], optional
        Makes the federation's conditional GAN, which the clients then train next to the
        classifier, for unlearners that need it (the ``generator`` need, MuGAN).
    generator_clients : int
        How many of a round's clients also train that GAN.
    image_shape : tuple of int
        ``(C, H, W)`` of the federation's images (the shape of an empty D_f for methods that
        never receive one).
    **fedavg_options
        Passed to :class:`FedAvg` (``fraction_train``, ``min_available_nodes``, ...).
    """

    train_message: ClassVar[str] = P.TRAIN
    """Message type of a FedAvg round's training."""

    def __init__(
        self,
        *,
        unlearner: Unlearner | None,
        build_model: ModelFactory,
        message_config: dict | None = None,
        recovery: RecoveryConfig | None = None,
        relay_lr: float = 0.05,
        local_epochs: int = 2,
        local_lr: float = 0.05,
        retain_per_client: int = 150,
        num_classes: int,
        mode: str = "backdoor",
        forget_classes: Iterable[int] = (),
        client_leaves: bool = False,
        observer: RunObserver | None = None,
        device: torch.device | None = None,
        seed: int = 0,
        unlearn_on_client: bool = False,
        build_gan: Callable[[], ConditionalGan] | None = None,
        generator_clients: int = 2,
        image_shape: tuple[int, ...] = (1, 1, 1),
        **fedavg_options: object,
    ) -> None:
        fedavg_options.setdefault("fraction_evaluate", 0.0)
        super().__init__(arrayrecord_key=P.ARRAYS, configrecord_key=P.CONFIG, **fedavg_options)
        self.unlearner = unlearner
        self.build_model = build_model
        self.message_config = dict(message_config or {})
        self.recovery = recovery or RecoveryConfig()
        self.relay_lr = relay_lr
        self.local_epochs = local_epochs
        self.local_lr = local_lr
        self.retain_per_client = retain_per_client
        self.keeps_history = unlearner is not None and "history" in unlearner.needs
        self.build_gan = build_gan
        self.generator_clients = generator_clients
        self.image_shape = tuple(image_shape)
        self.trains_generator = unlearner is not None and "generator" in unlearner.needs
        self.gan_arrays: ArrayRecord | None = None
        self.history: list[HistoryRound] = []
        self.num_classes = num_classes
        self.mode = mode
        self.forget_classes = tuple(forget_classes)
        self.client_leaves = client_leaves
        self.observer = observer or RunObserver()
        self.device = device or torch.device("cpu")
        self.seed = seed
        self.unlearn_on_client = unlearn_on_client
        self.excluded_nodes: set[int] = set()
        self.partition_of: dict[int, int] = {}
        self.deletion = DeletionRecord()
        self.bookkeeping = Bookkeeping()
        self.round_seconds: list[float] = []
        self._pending: dict[int, int] = {}
        self._requests: dict[int, tuple[list[str], list[int]]] = {}
        self._suspects: set[int] = set()  # failed since the last FedAvg round: not asked again
        self._compute_seconds = 0.0
        self._initial_arrays: ArrayRecord | None = None
        self._rng = random.Random(seed)
        self.timeout = 3600.0

    # ------------------------------------------------------------------ FedAvg hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample among the nodes that have not left; attach the run's message config."""
        config = ConfigRecord({**dict(config), **self._round_config(server_round)})
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        nodes = self._sample(grid)
        if not self.trains_generator:
            return self._construct_messages(record, nodes, self.train_message)
        # MuGAN: ``generator_clients`` of the round's clients also train the GAN
        chosen = set(self._rng.sample(nodes, min(self.generator_clients, len(nodes))))
        with_gan = RecordDict({P.ARRAYS: arrays, P.CONFIG: config, P.GAN: self._generator_arrays()})
        return [
            *self._construct_messages(record, [n for n in nodes if n not in chosen], P.TRAIN),
            *self._construct_messages(with_gan, sorted(chosen), P.TRAIN),
        ]

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg aggregation, after noting pending deletions and deleted-sample passes."""
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                self._note_train_reply(reply)
        if self.trains_generator:
            self._aggregate_generator([r for r in replies if not r.has_error()])
        return super().aggregate_train(server_round, replies)

    def _generator_arrays(self) -> ArrayRecord:
        if self.gan_arrays is None:
            if self.build_gan is None:
                raise RuntimeError(f"{self.unlearner.name} needs a GAN factory (build_gan)")
            self.gan_arrays = ArrayRecord(self.build_gan().state_dict())
            self.deletion.generator_bytes = sum(a.numpy().nbytes for a in self.gan_arrays.values())
        return self.gan_arrays

    def _aggregate_generator(self, replies: list[Message]) -> None:
        """FedAvg of the clients' GANs (MuGAN), taken out of the replies before the model's."""
        records = []
        for reply in replies:
            if P.GAN not in reply.content:
                continue
            metrics = reply.content[P.METRICS]
            self.deletion.generator_client_seconds += float(metrics[P.GAN_SECONDS])
            records.append(RecordDict({P.GAN: reply.content[P.GAN], P.METRICS: metrics}))
            del reply.content[P.GAN]
        if records:
            self.gan_arrays = aggregate_arrayrecords(records, P.NUM_EXAMPLES)

    # ------------------------------------------------------------------ main loop
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float = 3600,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` FedAvg rounds; handle deletion requests as they arrive."""
        self.begin(initial_arrays, timeout)
        return self.run_rounds(
            grid, initial_arrays, num_rounds, "federated", train_config, evaluate_fn
        )

    def begin(self, initial_arrays: ArrayRecord, timeout: float = 3600) -> None:
        """Remember the initial weights w_0 (the retrain start, the incompetent teacher)."""
        self._initial_arrays = initial_arrays
        self.timeout = timeout

    @property
    def pending_deletions(self) -> dict[int, int]:
        """Node id -> number of samples, for the deletion requests not yet carried out."""
        return dict(self._pending)

    def take_over(self, parent: FederatedUnlearning) -> None:
        """Continue from ``parent``'s federation state: w_0, pending requests, history, ids.

        ``fedforget compare`` trains once and lets each strategy take over from there.
        """
        self.begin(parent._initial_arrays, parent.timeout)
        self._pending = dict(parent._pending)
        self.partition_of = dict(parent.partition_of)
        self.excluded_nodes = set(parent.excluded_nodes)
        if self.keeps_history:
            self.history = list(parent.history)
        if self.trains_generator:
            self.gan_arrays = parent.gan_arrays
            self.deletion.generator_client_seconds = parent.deletion.generator_client_seconds
            self.deletion.generator_bytes = parent.deletion.generator_bytes

    def carry_out_deletion(self, grid: Grid, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The deletion step now, for the pending requests; returns the new global weights."""
        return self._deletion_step(grid, server_round, arrays)

    def run_rounds(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        num_rounds: int,
        phase: str,
        train_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
        handle_deletions: bool = True,
    ) -> Result:
        """Plain FedAvg rounds (plus the deletion step when ``handle_deletions``)."""
        result = Result()
        train_config = train_config or ConfigRecord()
        self.observer.run_started(phase, num_rounds)
        for server_round in range(1, num_rounds + 1):
            started = time.perf_counter()
            arrays, info = self._fedavg_round(
                grid, server_round, arrays, train_config, record=phase == "federated"
            )
            info["round_seconds"] = time.perf_counter() - started
            if phase == "federated":
                self.round_seconds.append(info["round_seconds"])
            result.arrays = arrays
            if evaluate_fn is not None:
                metrics = evaluate_fn(server_round, arrays)
                if metrics is not None:
                    result.evaluate_metrics_serverapp[server_round] = metrics
            self.observer.round_finished(phase, server_round, info)
            self.observer.round_model(phase, server_round, _numpy_state(arrays))
            if handle_deletions and self._pending:
                arrays = self._deletion_step(grid, server_round, arrays)
                result.arrays = arrays
        return result

    def _fedavg_round(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        train_config: ConfigRecord,
        record: bool = False,
    ) -> tuple[ArrayRecord, dict]:
        before = self.bookkeeping.deleted_passes_after + self.bookkeeping.deleted_passes_before
        self._compute_seconds = 0.0
        self._suspects.clear()  # every node gets a new chance in each FedAvg round
        messages = list(self.configure_train(server_round, arrays, train_config, grid))
        exchange_started = time.perf_counter()
        replies = exchange(grid, messages, self.timeout)
        exchange_seconds = time.perf_counter() - exchange_started
        new_arrays, metrics = self.aggregate_train(server_round, replies)
        failures = sum(reply.has_error() for reply in replies)
        if new_arrays is None:
            raise RuntimeError(f"round {server_round}: every client failed ({_errors(replies)})")
        sampled = {m.metadata.dst_node_id for m in messages}
        self._poll_deletion_requests(grid, server_round, new_arrays, sampled)
        if record and self.keeps_history:
            trained = [_client_update(r) for r in replies if not r.has_error()]
            self.history.append(as_history(server_round, _numpy_state(arrays), trained))
        after = self.bookkeeping.deleted_passes_after + self.bookkeeping.deleted_passes_before
        info = {
            "clients": len(replies) - failures,
            "failures": failures,
            "exchange_seconds": exchange_seconds,
            "client_compute_seconds": self._compute_seconds,
            "train_loss": float(metrics[P.TRAIN_LOSS]) if metrics else float("nan"),
            "deleted_sample_passes": after - before,
        }
        return new_arrays, info

    def _poll_deletion_requests(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, sampled: set[int]
    ) -> None:
        """Ask the clients this round did not sample whether they want a deletion.

        A client reports its requests in its training reply; with ``fraction_train < 1`` the
        clients left out would report theirs only when next sampled, and a class deletion
        would reach a few clients only. ``query.deletion_status`` carries the new global
        model (the one a requesting client keeps as its verification reference).
        """
        others = [n for n in self._active_nodes(grid) if n not in sampled]
        if not others:
            return
        config = ConfigRecord(self._round_config(server_round))
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        for reply in self._query(grid, others, P.DELETION_STATUS, record, strict=False):
            self._note_train_reply(reply)

    # ------------------------------------------------------------------ deletion step
    def _deletion_step(self, grid: Grid, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        nodes = sorted(self._pending)
        self.deletion.forget_samples = sum(self._pending.values())
        self._note_requests(nodes, server_round)
        self._pending.clear()
        self.deletion.round = server_round
        self.deletion.clients = sorted(self.partition_of.get(n, -1) for n in nodes)
        self.deletion.nodes = nodes
        self.observer.checkpoint("before_deletion", _numpy_state(arrays))
        started = time.perf_counter()
        unlearned = self.unlearn_step(grid, server_round, arrays, nodes)
        self.deletion.unlearning_seconds = time.perf_counter() - started
        self.observer.checkpoint("after_unlearning", _numpy_state(unlearned))
        started = time.perf_counter()
        recovered = self._relay(grid, unlearned)
        self.deletion.recovery_seconds = time.perf_counter() - started
        self.observer.checkpoint("after_recovery", _numpy_state(recovered))
        return recovered

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Gather D_f, unlearn it, and tell the clients to drop it."""
        if self.unlearner is None:
            raise RuntimeError("FederatedUnlearning needs an unlearner")
        if self.unlearn_on_client:
            return self._unlearn_on_clients(grid, server_round, arrays, nodes)
        needs = self.unlearner.needs
        forget = None
        if "forget" in needs:
            forget, nodes = self._gather_forget_data(grid, nodes)
        retain = self._gather_retain_data(grid) if "retain" in needs else None
        history = tuple(self.history) if "history" in needs else ()
        self.deletion.history_bytes = sum(h.nbytes() for h in history)
        self._complete_deletion(grid, nodes)
        context = UnlearningContext(
            initial_state=_numpy_state(self._initial_arrays),
            build_model=self.build_model,
            device=self.device,
            seed=self.seed + server_round,
            progress=self.observer.progress,
            federated_train=self._training_on_clients(grid) if "rounds" in needs else None,
            local_epochs=self.local_epochs,
            local_lr=self.local_lr,
        )
        request = UnlearningRequest(
            forget=forget if forget is not None else _empty_like(retain, self.image_shape),
            num_classes=self.num_classes,
            mode=self._deletion_mode(nodes),
            forget_classes=self._deletion_classes(nodes),
            retain=retain,
            history=history,
            leaving_clients=tuple(self.deletion.clients) if self.client_leaves else (),
            generator=self._federated_generator() if "generator" in needs else None,
        )
        unlearned = self.unlearner.unlearn(self._model_from(arrays), request, context)
        return ArrayRecord(unlearned.cpu().state_dict())

    def _federated_generator(self) -> ConditionalGan:
        """The clients' averaged GAN (the ``generator`` need)."""
        gan = self.build_gan()
        gan.load_state_dict(self._generator_arrays().to_torch_state_dict())
        return gan.eval()

    def _unlearn_on_clients(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Each requesting client unlearns its own D_f, in turn (``train.unlearn``).

        The model travels along the requesting clients like the recovery relay: each one
        runs the unlearner on the model it receives and its own D_f, so the result has
        forgotten every client's part and no D_f sample leaves its node. A client that fails
        keeps its request for a later round.
        """
        done = []
        initial = self._initial_arrays
        for step, node in enumerate(nodes):
            extra = {
                P.MODE: self._deletion_mode(nodes),
                P.CLASSES: json.dumps(list(self._deletion_classes(nodes))),
                P.SEED: self.seed + server_round,
            }
            config = ConfigRecord({**self._deletion_config([node]), **extra})
            record = RecordDict({P.ARRAYS: arrays, P.INITIAL_ARRAYS: initial, P.CONFIG: config})
            replies = self._query(grid, [node], P.LOCAL_UNLEARN, record, strict=False)
            self.observer.progress("client unlearning", step + 1, len(nodes), {})
            if replies:
                arrays = replies[0].content[P.ARRAYS]
                self._compute_seconds += float(replies[0].content[P.METRICS][P.COMPUTE_SECONDS])
                done.append(node)
        self._complete_deletion(grid, done)
        return arrays

    def _gather_forget_data(self, grid: Grid, nodes: list[int]) -> tuple[ArrayDataset, list[int]]:
        """D_f from the requesting nodes, and the nodes that sent it.

        A node that fails here keeps its request: it reports it again in the next round.
        """
        record = RecordDict({P.CONFIG: self._deletion_config(nodes)})
        replies = self._query(grid, nodes, P.FORGET_DATA, record, strict=False)
        if not replies:
            raise RuntimeError("no requesting client sent its data for unlearning")
        forget = _concatenate_data(replies)
        self.deletion.forget_samples_received = len(forget)
        return forget, sorted(reply.metadata.src_node_id for reply in replies)

    def _gather_retain_data(self, grid: Grid) -> ArrayDataset:
        config = self._config(**{P.RETAIN_SAMPLES: self.retain_per_client})
        nodes = self._active_nodes(grid)
        retain = _concatenate_data(
            self._query(grid, nodes, P.RETAIN_DATA, RecordDict({P.CONFIG: config}), strict=False)
        )
        self.deletion.retain_samples = len(retain)
        return retain

    def _training_on_clients(self, grid: Grid) -> Callable[..., list[ClientUpdate]]:
        """The ``rounds`` need: every remaining client trains the given weights locally."""

        def train(state: dict[str, np.ndarray], epochs: int, lr: float) -> list[ClientUpdate]:
            config = self._config(**{P.EPOCHS: epochs, P.LEARNING_RATE: lr})
            arrays = ArrayRecord(array_dict={k: Array(np.asarray(v)) for k, v in state.items()})
            record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
            replies = self._query(
                grid, self._active_nodes(grid), P.LOCAL_TRAIN, record, strict=False
            )
            self.deletion.client_training_calls += 1
            for reply in replies:
                self._note_train_reply(reply)
            return [_client_update(reply) for reply in replies]

        return train

    def _complete_deletion(self, grid: Grid, nodes: list[int]) -> None:
        record = RecordDict({P.CONFIG: self._deletion_config(nodes)})
        self._query(grid, nodes, P.DELETION_COMPLETE, record, strict=False)
        if self.client_leaves:
            self.excluded_nodes.update(nodes)

    # ------------------------------------------------------------------ recovery relay
    def _relay(self, grid: Grid, arrays: ArrayRecord) -> ArrayRecord:
        if not (self.recovery.enabled and self.unlearner is not None and self.unlearner.uses_relay):
            return arrays
        for hop in range(self.recovery.max_hops + 1):
            scores = self._local_scores(grid, arrays)
            if not scores:
                return arrays
            weakest = min(scores, key=scores.__getitem__)
            self.deletion.relay_hops = hop
            self.deletion.relay_min_accuracy = scores[weakest]
            self.observer.progress(
                "recovery", hop, self.recovery.max_hops, {"min_accuracy": scores[weakest]}
            )
            if scores[weakest] >= self.recovery.min_accuracy or hop == self.recovery.max_hops:
                return arrays
            arrays = self._relay_hop(grid, scores, arrays)
        return arrays

    def _relay_hop(self, grid: Grid, scores: dict[int, float], arrays: ArrayRecord) -> ArrayRecord:
        """Train at the weakest node; when it fails, at the next-weakest, and so on."""
        for node in sorted(scores, key=scores.__getitem__):
            trained = self._relay_train(grid, node, arrays)
            if trained is not None:
                return trained
        return arrays

    def _local_scores(self, grid: Grid, arrays: ArrayRecord) -> dict[int, float]:
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: self._config()})
        replies = self._query(grid, self._active_nodes(grid), P.LOCAL_EVAL, record, strict=False)
        return {
            reply.metadata.src_node_id: float(reply.content[P.METRICS][P.ACCURACY])
            for reply in replies
            if int(reply.content[P.METRICS][P.NUM_EXAMPLES]) > 0
        }

    def _relay_train(self, grid: Grid, node: int, arrays: ArrayRecord) -> ArrayRecord | None:
        config = self._config(
            **{P.EPOCHS: self.recovery.local_epochs, P.LEARNING_RATE: self.relay_lr}
        )
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        replies = self._query(grid, [node], P.RELAY_TRAIN, record, strict=False)
        if not replies:
            return None
        self._note_train_reply(replies[0])
        return replies[0].content[P.ARRAYS]

    # ------------------------------------------------------------------ verification
    def verify_deletion(
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
        nodes = sorted(self.deletion.nodes, key=lambda n: self.partition_of.get(n, n))[:clients]
        if not nodes:
            return []
        extra = {P.VERIFY_DIR: folder} if folder else {}
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: self._config(**extra)})
        self.observer.progress("verification", 0, len(nodes), {})
        known = len(self.deletion.faults)
        replies = self._query(grid, nodes, P.VERIFY, record, strict=False)
        reports = [
            {
                **json.loads(str(reply.content[P.CONFIG][P.REPORT])),
                "client": self.partition_of.get(reply.metadata.src_node_id, -1),
                "method": method,
            }
            for reply in replies
        ]
        reports += [
            {"client": fault["client"], "method": method, "error": fault["error"]}
            for fault in self.deletion.faults[known:]
        ]
        self.observer.progress("verification", len(nodes), len(nodes), {})
        return sorted(reports, key=lambda report: report["client"])

    # ------------------------------------------------------------------ helpers
    def _round_config(self, server_round: int) -> dict:
        return {
            **self.message_config,
            P.SERVER_ROUND: server_round,
            P.NUM_CLASSES: self.num_classes,
            P.SEED: self.seed * 1_000_003 + server_round * 10_007 + self._rng.randrange(10**6),
        }

    def _config(self, **extra: object) -> ConfigRecord:
        return ConfigRecord({**self._round_config(0), **extra})

    def _active_nodes(self, grid: Grid) -> list[int]:
        # Wait for the whole federation only at the start: later, a node that vanished must
        # not stall the run (it is skipped and recorded as a fault).
        needed = self.min_available_nodes if not self.round_seconds else 1
        _, all_nodes = sample_nodes(grid, needed, 0)
        skipped = self.excluded_nodes | self._suspects
        return sorted(n for n in all_nodes if n not in skipped)

    def _sample(self, grid: Grid) -> list[int]:
        nodes = self._active_nodes(grid)
        size = max(self.min_train_nodes, int(len(nodes) * self.fraction_train))
        return nodes if size >= len(nodes) else sorted(self._rng.sample(nodes, size))

    def _query(
        self,
        grid: Grid,
        nodes: list[int],
        message_type: str,
        record: RecordDict,
        strict: bool = True,
    ) -> list[Message]:
        """Send ``record`` to ``nodes`` and wait at most ``timeout`` seconds for the replies.

        Nodes that fail or do not answer in time are recorded in ``deletion.faults``; with
        ``strict`` that is an error, otherwise the answers that came back are returned.
        """
        messages = self._construct_messages(record, nodes, message_type)
        replies = exchange(grid, messages, self.timeout)
        sent = {m.metadata.message_id: m.metadata.dst_node_id for m in messages}
        good = [reply for reply in replies if not reply.has_error()]
        answered = {reply.metadata.src_node_id for reply in good}
        faults = [
            {
                "message": message_type,
                "node": node,
                "client": self.partition_of.get(node, -1),
                "error": _failure(replies, sent, node),
            }
            for node in nodes
            if node not in answered
        ]
        if faults and strict:
            raise RuntimeError(
                f"{message_type}: {len(faults)} of {len(nodes)} clients did not answer "
                f"({faults[0]['error']})"
            )
        for fault in faults:
            self._suspects.add(fault["node"])
            self.deletion.faults.append(fault)
            self.observer.progress("fault", len(self.deletion.faults), 0, {})
            log(WARN, "%s: node %s skipped (%s)", message_type, fault["node"], fault["error"])
        return good

    def _note_requests(self, nodes: list[int], server_round: int) -> None:
        """Record which node-side requests this deletion step carries out."""
        for node in nodes:
            ids, classes = self._requests.get(node, ([], []))
            self.deletion.requests.append(
                {
                    "round": server_round,
                    "client": self.partition_of.get(node, -1),
                    "node": node,
                    "requests": ids,
                    "classes": classes,
                    "samples": self._pending[node],
                }
            )

    def _deletion_config(self, nodes: list[int]) -> ConfigRecord:
        """The config of the deletion's messages: its round and the requests it carries out."""
        return self._config(**self._request_map(nodes), **{P.SERVER_ROUND: self.deletion.round})

    def _request_map(self, nodes: list[int]) -> dict[str, str]:
        """``{requests: JSON {node id: [request ids]}}`` for the nodes that filed requests."""
        named = {str(n): self._requests[n][0] for n in nodes if n in self._requests}
        return {P.REQUESTS: json.dumps(named)} if named else {}

    def _deletion_mode(self, nodes: list[int]) -> str:
        """The configured mode; for node-side requests, ``class`` when every one names classes."""
        if self.mode != "requests":
            return self.mode
        return "class" if self._deletion_classes(nodes) else "random"

    def _deletion_classes(self, nodes: list[int]) -> tuple[int, ...]:
        if self.mode != "requests":
            return self.forget_classes
        filed = [self._requests.get(n, ([], []))[1] for n in nodes]
        if not filed or not all(filed):
            return ()
        return tuple(sorted({c for classes in filed for c in classes}))

    def _note_train_reply(self, reply: Message) -> None:
        metrics = reply.content[P.METRICS]
        node = reply.metadata.src_node_id
        self.partition_of[node] = int(metrics[P.PARTITION_ID])
        self._compute_seconds += float(metrics[P.COMPUTE_SECONDS])
        passes = int(metrics[P.DELETED_PASSES])
        if int(metrics[P.DELETION_DONE]):
            self.bookkeeping.deleted_passes_after += passes
        else:
            self.bookkeeping.deleted_passes_before += passes
        if int(metrics[P.DELETION_PENDING]):
            self._pending[node] = int(metrics[P.NUM_FORGET])
            if P.DELETION in reply.content:
                filed = reply.content[P.DELETION]
                self._requests[node] = (list(filed[P.REQUESTS]), list(filed[P.CLASSES]))

    def _model_from(self, arrays: ArrayRecord) -> ClassifierModel:
        model = self.build_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        return model


class Retrain(FederatedUnlearning):
    """Baseline B1: at the deletion, retrain from the initial weights without D_f.

    The deleting clients drop D_f first; then FedAvg reruns the rounds played so far from
    w_0 on the retained data, and the run continues as usual. No relay is needed.
    """

    def __init__(self, **options: object) -> None:
        options["unlearner"] = None
        super().__init__(**options)
        self.recovery = RecoveryConfig(enabled=False)

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Drop D_f at the clients and rerun ``server_round`` rounds from w_0."""
        self._complete_deletion(grid, nodes)
        result = self.run_rounds(
            grid, self._initial_arrays, server_round, "retrain", handle_deletions=False
        )
        return result.arrays


def _numpy_state(arrays: ArrayRecord) -> dict[str, np.ndarray]:
    return {key: array.numpy() for key, array in arrays.items()}


def _client_update(reply: Message) -> ClientUpdate:
    metrics = reply.content[P.METRICS]
    return ClientUpdate(
        _numpy_state(reply.content[P.ARRAYS]),
        int(metrics[P.NUM_EXAMPLES]),
        int(metrics[P.PARTITION_ID]),
    )


def _concatenate_data(replies: Iterable[Message]) -> ArrayDataset:
    records = [reply.content[P.DATA] for reply in replies]
    return ArrayDataset(
        x=np.concatenate([r["x"].numpy() for r in records]),
        y=np.concatenate([r["y"].numpy() for r in records]),
    )


def _empty_like(data: ArrayDataset | None, image_shape: tuple[int, ...]) -> ArrayDataset:
    """An empty D_f (of the federation's image shape) for methods that never receive it."""
    if data is None:
        return ArrayDataset(x=np.empty((0, *image_shape), np.float32), y=np.empty(0, np.int64))
    return data.subset(np.empty(0, dtype=np.int64))


def _errors(replies: Iterable[Message]) -> str:
    reasons = {
        reply.error.reason.strip().splitlines()[-1] for reply in replies if reply.has_error()
    }
    return "; ".join(sorted(reasons)) or "timeout"


__all__ = ["Bookkeeping", "DeletionRecord", "FederatedUnlearning", "Retrain"]


PULL_INTERVAL = 0.2  # seconds between polls for replies (Grid.send_and_receive sleeps 3 s)


def exchange(grid: Grid, messages: Iterable[Message], timeout: float) -> list[Message]:
    """Push ``messages`` and collect their replies until all arrived or ``timeout`` passed.

    ``Grid.send_and_receive`` with a finer poll: on a deployment its fixed 3 s sleep between
    pulls is most of a message's round trip. Pushing fills in each message's id, so callers
    can match replies (``reply_to_message_id``) to what they sent afterwards.
    """
    waiting = set(grid.push_messages(messages))
    deadline = time.monotonic() + timeout
    replies: list[Message] = []
    while waiting:
        arrived = list(grid.pull_messages(waiting))
        replies.extend(arrived)
        waiting.difference_update(reply.metadata.reply_to_message_id for reply in arrived)
        if not waiting or time.monotonic() >= deadline:
            break
        pause(PULL_INTERVAL)  # raises RunStoppedError at once on Ctrl-C (fedforget.stopping)
    return replies


def _failure(replies: list[Message], sent: dict[str, int], node: int) -> str:
    """Why ``node`` gave no usable reply: its error (matched by message id), or a timeout."""
    for reply in replies:
        if not reply.has_error():
            continue
        target = sent.get(reply.metadata.reply_to_message_id, reply.metadata.src_node_id)
        if target == node:
            return reply.error.reason.strip().splitlines()[-1] if reply.error.reason else "error"
    return "no reply before the timeout"
