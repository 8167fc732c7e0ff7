"""Flower strategies that run FedAvg, take deletion requests, unlearn and recover.

:class:`FederatedUnlearning` is a :class:`flwr.serverapp.strategy.FedAvg` whose ``start``
runs the usual rounds and, when clients report pending deletion requests in their train
replies, runs the deletion step between two rounds:

1. what the unlearner needs, gathered the federated way by its data needs
   (:mod:`fedforget.needs`: D_f from the requesting clients, a sample of retained data, the
   kept client updates, the clients' GAN, what a method's training-time hook kept, ...);
2. ``query.deletion_complete``: the clients drop D_f for good. The order is sent, not waited
   for: the server unlearns while the clients carry it out, and collects the replies before
   any client trains or scores again (at once for methods that train on the clients). The
   relay's candidates score the model before unlearning in the same exchange, so the
   relay's first request only scores the unlearned one;
3. the unlearner (any :class:`fedforget.unlearning.Unlearner`) on the server's device;
4. if the method includes it (paper 000's), the recovery relay (:mod:`.relay`);

then FedAvg continues. :class:`Retrain` replaces step 3 by retraining from the initial
weights without the deleted data (baseline B1). A model that learned nothing (near chance on
the declared validation set) gets step 2 alone (``deletion.untrained``, :mod:`.deletion`).

The class only sequences these steps; its parts each own one concern: settings
(:mod:`.settings`), messages and faults (:mod:`.messaging`), requests and the record
(:mod:`.ledger`), the needs (:mod:`.needset`), the clients' part of a deletion
(:mod:`.gathering`) and the relay (:mod:`.relay`). Each part returns its figures; the
ledger assembles the step's record from them.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedforget import protocol as P
from fedforget.data.sources import ArrayDataset
from fedforget.models import ClassifierModel
from fedforget.needs import ServerParts
from fedforget.recovery import validation_objective
from fedforget.report import RunObserver
from fedforget.report.summary import DeletionSummary
from fedforget.strategies.deletion import DeletionStep
from fedforget.strategies.gathering import Gathering
from fedforget.strategies.ledger import Bookkeeping, DeletionLedger
from fedforget.strategies.messaging import (
    MessageConfigs,
    NodeMessenger,
    arrays_from,
    error_reasons,
    messages_to,
    numpy_state,
)
from fedforget.strategies.needset import NeedSet
from fedforget.strategies.relay import RecoveryRelay
from fedforget.strategies.settings import StrategySettings
from fedforget.training import load_optimizer_modules
from fedforget.unlearning import Unlearner

ModelFactory = Callable[[], ClassifierModel]


class FederatedUnlearning(FedAvg):
    """FedAvg with deletion requests, server-side unlearning and a recovery relay.

    Parameters
    ----------
    settings : StrategySettings
        Built from the run's configuration (:meth:`StrategySettings.from_config`), which the
        clients receive too.
    unlearner : Unlearner or None
        The method run on the gathered data (``None`` for the baselines that override
        :meth:`unlearn_step`).
    build_model : Callable[[], ClassifierModel]
        Makes a fresh model of the federation's architecture.
    observer : RunObserver, optional
        Receives progress, per-round and phase events.
    device : torch.device, optional
        Where the server computes (unlearning); CPU by default.
    build_gan : Callable[[], ConditionalGan], optional
        Makes the federation's conditional GAN, for methods with the ``generator`` need.
    validation : ArrayDataset, optional
        The experimenter's declared validation set (never client data): the unlearner's
        request carries it, and it is the relay's objective (``recovery.objective``).
    """

    train_message: ClassVar[str] = P.TRAIN
    """Message type of a FedAvg round's training."""

    def __init__(
        self,
        settings: StrategySettings,
        *,
        unlearner: Unlearner | None,
        build_model: ModelFactory,
        observer: RunObserver | None = None,
        device: torch.device | None = None,
        build_gan: Callable[[], object] | None = None,
        validation: ArrayDataset | None = None,
    ) -> None:
        super().__init__(
            fraction_train=settings.fraction_train,
            fraction_evaluate=0.0,
            min_available_nodes=settings.min_available_nodes,
            arrayrecord_key=P.ARRAYS,
            configrecord_key=P.CONFIG,
        )
        self.settings = settings
        self.unlearner = unlearner
        self.build_model = build_model
        self.observer = observer or RunObserver()
        self.device = device or torch.device("cpu")
        self.validation = validation
        self.round_seconds: list[float] = []
        self.initial_arrays: ArrayRecord | None = None
        entries = settings.message_config()
        self.configs = MessageConfigs(entries, settings.num_classes, settings.seed)
        self.ledger = DeletionLedger(settings.mode, settings.forget_classes)
        self.messenger = NodeMessenger(
            settings.timeout, settings.min_available_nodes, self.ledger.client_of, self._fault
        )
        parts = (self.messenger, self.ledger, self.configs, self.observer)
        self.gathering = Gathering(settings, *parts)
        on_validation = functools.partial(
            validation_objective, settings.recovery, validation, build_model, device=self.device
        )
        self.relay = RecoveryRelay(
            settings.recovery, settings.relay_lr, *parts, objective=on_validation
        )
        # unlearning on the clients, each with its own D_f, gathers nothing on the server
        gathers = unlearner is not None and not settings.unlearn_on_client
        need_parts = ServerParts(settings, *parts, build_gan=build_gan)
        self.needset = NeedSet([unlearner] if gathers else [], need_parts)
        self.step = DeletionStep(
            settings, *parts[:2], self.gathering, self.relay, self.needset, self.observer
        )
        self.step.serve(build_model, self.device, validation)
        self._phase = "federated"
        self._round_start: ArrayRecord | None = None

    @property
    def deletion(self) -> DeletionSummary:
        """The latest deletion step's record (see :class:`DeletionLedger`)."""
        return self.ledger.record

    @property
    def bookkeeping(self) -> Bookkeeping:
        """Sample passes over deleted samples, before and after their deletion."""
        return self.ledger.bookkeeping

    @property
    def pending_deletions(self) -> dict[int, int]:
        """Node id -> number of samples, for the deletion requests not yet carried out."""
        return dict(self.ledger.pending)

    # ------------------------------------------------------------------ FedAvg hooks
    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Sample among the nodes that have not left; attach the run's message config."""
        config = ConfigRecord({**dict(config), **self._round_entries(server_round)})
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        rng = self.configs.rng
        nodes = self.messenger.sample(grid, self.fraction_train, self.min_train_nodes, rng)
        shaped = self.needset.round_messages(record, nodes, rng, self.train_message, self._phase)
        return shaped if shaped is not None else messages_to(record, nodes, self.train_message)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg aggregation, after noting requests, deleted-sample passes, needs' shares."""
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                self.ledger.note_train_reply(reply)  # partition ids first: they order replies
        replies.sort(key=lambda r: self.messenger.order_key(r.metadata.src_node_id))
        good = [reply for reply in replies if not reply.has_error()]
        start = self._round_start
        if start is not None:
            self.needset.note_round(self._phase, server_round, start, good)
        return super().aggregate_train(server_round, replies)

    def _round_entries(self, server_round: int) -> dict:
        """A FedAvg round's config entries, with what the round's needs ask of the clients."""
        return {**self.configs.for_round(server_round), **self.needset.round_entries(self._phase)}

    # ------------------------------------------------------------------ main loop
    def start(
        self,
        grid: Grid,
        initial_arrays: ArrayRecord,
        num_rounds: int = 3,
        timeout: float | None = None,
        train_config: ConfigRecord | None = None,
        evaluate_config: ConfigRecord | None = None,
        evaluate_fn: Callable[[int, ArrayRecord], MetricRecord | None] | None = None,
    ) -> Result:
        """Run ``num_rounds`` FedAvg rounds; handle deletion requests as they arrive."""
        self.begin(initial_arrays, timeout)
        result = self.run_rounds(
            grid, initial_arrays, num_rounds, "federated", train_config, evaluate_fn
        )
        if self.settings.mode.node_side and self.deletion.round and result.arrays is not None:
            self.step.score_on_nodes(grid, result.arrays)
        return result

    def begin(self, initial_arrays: ArrayRecord, timeout: float | None = None) -> None:
        """Remember the initial weights w_0 (the retrain start, the incompetent teacher)."""
        self.initial_arrays = initial_arrays
        load_optimizer_modules()
        if timeout is not None:
            self.messenger.timeout = timeout

    def serve_branches(self, branches: Iterable[FederatedUnlearning]) -> None:
        """Keep, while training, what any of these ``compare`` branches will need."""
        branches = list(branches)
        self.needset.serve(u for branch in branches for u in branch.needset.unlearners)
        self.needset.attach_forget = any(b.needset.attach_forget for b in branches)
        self.needset.shared_model = True  # every branch starts from this training's model

    def take_over(self, parent: FederatedUnlearning) -> None:
        """Continue from ``parent``'s federation state (a ``compare`` branch from its base)."""
        self.begin(parent.initial_arrays)
        self.round_seconds = list(parent.round_seconds)
        self.ledger.take_over(parent.ledger)
        self.messenger.exclude(parent.messenger.excluded)
        self.needset.take_over(parent.needset)

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
            started, started_at = time.perf_counter(), time.time()
            arrays, info = self._fedavg_round(grid, server_round, arrays, train_config, phase)
            info.update(round_seconds=time.perf_counter() - started, started_at=started_at)
            if phase == "federated":
                self.round_seconds.append(info["round_seconds"])
                self.messenger.federation_running = True
            result.arrays = arrays
            if evaluate_fn is not None:
                metrics = evaluate_fn(server_round, arrays)
                if metrics is not None:
                    result.evaluate_metrics_serverapp[server_round] = metrics
            self.observer.round_finished(phase, server_round, info)
            self.observer.round_model(phase, server_round, numpy_state(arrays))
            if handle_deletions and self.ledger.pending:
                self.step.orders_ride = server_round < num_rounds  # on the next round's messages
                result.arrays = arrays = self.carry_out_deletion(grid, server_round, arrays)
        self.messenger.flush_orders(grid)
        return result

    def run_reference(
        self, grid: Grid, num_rounds: int, train_seed: int | None = None, phase: str = "reference"
    ) -> ArrayRecord:
        """The reference: FedAvg from w_0 without the deleted data (serving no need).

        ``train_seed``: a member of the reference band, with initial weights and batch orders
        of its own (the data stay the same).
        """
        self.needset.stop_training()
        initial = self.initial_arrays
        if train_seed is not None:
            self.configs.reseed(train_seed)
            initial = seeded_initial(self.build_model, train_seed)
        result = self.run_rounds(grid, initial, num_rounds, phase, handle_deletions=False)
        return result.arrays

    def _fedavg_round(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord, phase: str
    ) -> tuple[ArrayRecord, dict]:
        passes = self.bookkeeping.total
        self.ledger.compute_seconds = 0.0
        self.messenger.new_round()
        self._phase, self._round_start = phase, arrays
        messages = list(self.configure_train(server_round, arrays, config, grid))
        exchange_started = time.perf_counter()
        replies = self.messenger.exchange(grid, messages)
        exchange_seconds = time.perf_counter() - exchange_started
        new_arrays, metrics = self.aggregate_train(server_round, replies)
        failures = sum(reply.has_error() for reply in replies)
        if new_arrays is None:
            raise RuntimeError(
                f"round {server_round}: every client failed ({error_reasons(replies)})"
            )
        adjusts = self.unlearner is not None and self.unlearner.adjusts_updates
        if adjusts and self.deletion.round and phase != "reference":
            new_arrays = self._post_deletion(arrays, new_arrays)
        sampled = {m.metadata.dst_node_id for m in messages}
        self.gathering.poll_deletion_requests(
            grid, new_arrays, lambda: ConfigRecord(self._round_entries(server_round)), sampled
        )
        info = {
            "clients": len(replies) - failures,
            "failures": failures,
            "exchange_seconds": exchange_seconds,
            "client_compute_seconds": self.ledger.compute_seconds,
            "train_loss": float(metrics[P.TRAIN_LOSS]) if metrics else float("nan"),
            "deleted_sample_passes": self.bookkeeping.total - passes,
        }
        return new_arrays, info

    def _post_deletion(self, before: ArrayRecord, aggregated: ArrayRecord) -> ArrayRecord:
        """The unlearner's say on a FedAvg round after its deletion (FedOSD's projection)."""
        state = numpy_state(aggregated)
        adjusted = self.unlearner.adjust_update(numpy_state(before), state)
        return aggregated if adjusted is state else arrays_from(adjusted)

    # ------------------------------------------------------------------ deletion step
    def carry_out_deletion(self, grid: Grid, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The deletion step now, for the pending requests; returns the new global weights."""
        return self.step.carry_out(
            grid, server_round, arrays, self.unlearn_step, self.unlearner, self.round_seconds
        )

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Gather what the unlearner needs, tell the clients to drop D_f, unlearn (on the
        server, or along the requesting clients with ``--unlearn-on client``)."""
        if self.unlearner is None:
            raise RuntimeError("FederatedUnlearning needs an unlearner")
        if self.settings.unlearn_on_client:
            seed = self.settings.seed + server_round
            initial = self.initial_arrays
            arrays, done = self.gathering.unlearn_on_clients(grid, arrays, initial, nodes, seed)
            self.gathering.complete_deletion(grid, done)
            return arrays
        model = self.model_from(arrays)
        return self.step.unlearn_on_server(
            grid, server_round, model, nodes, self.unlearner, self.initial_arrays
        )

    def retrain_from_initial(self, grid: Grid, server_round: int, nodes: list[int]) -> ArrayRecord:
        """Drop D_f at the clients and rerun ``server_round`` FedAvg rounds from w_0."""
        self.gathering.complete_deletion(grid, nodes)
        result = self.run_rounds(
            grid, self.initial_arrays, server_round, "retrain", handle_deletions=False
        )
        return result.arrays

    # ------------------------------------------------------------------ helpers
    def model_from(self, arrays: ArrayRecord) -> ClassifierModel:
        """A fresh model with ``arrays``."""
        model = self.build_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def _fault(self, fault: dict) -> None:
        self.ledger.record_fault(fault)
        self.observer.progress("fault", len(self.ledger.faults), 0, {})


class Retrain(FederatedUnlearning):
    """Baseline B1: at the deletion, retrain from the initial weights without D_f.

    The deleting clients drop D_f first; then FedAvg reruns the rounds played so far from
    w_0 on the retained data, and the run continues as usual. No relay is needed.
    ``train_seed`` gives the retrain initial weights and batch orders of its own (a member of
    the reference band): the federation, its data and D_f stay the same.
    """

    def __init__(
        self, settings: StrategySettings, *, train_seed: int | None = None, **parts: object
    ) -> None:
        super().__init__(settings, unlearner=None, **parts)  # type: ignore[arg-type]
        self.train_seed = train_seed

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Drop D_f at the clients and rerun ``server_round`` rounds from w_0."""
        if self.train_seed is not None:
            self.configs.reseed(self.train_seed)
            self.initial_arrays = seeded_initial(self.build_model, self.train_seed)
        return self.retrain_from_initial(grid, server_round, nodes)


BAND_SEED_STEP = 104_729
"""Seed distance between two members of a reference band (a prime: no two cells of a
sweep's seeds 0, 1, 2, ... draw the same initial weights)."""


def band_seed(seed: int, member: int) -> int:
    """The training seed of the ``member``-th retrain (from 2) of a run seeded ``seed``."""
    return seed + BAND_SEED_STEP * (member - 1)


def seeded_initial(build_model: ModelFactory, seed: int) -> ArrayRecord:
    """Initial weights drawn with ``seed``, leaving the process's random state as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return ArrayRecord(build_model().state_dict())


__all__ = [
    "Bookkeeping",
    "FederatedUnlearning",
    "ModelFactory",
    "Retrain",
    "band_seed",
    "seeded_initial",
]
