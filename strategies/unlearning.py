"""Flower strategies that run FedAvg, take deletion requests, unlearn and recover.

:class:`FederatedUnlearning` is a :class:`flwr.serverapp.strategy.FedAvg` whose ``start``
runs the usual rounds and, when clients report pending deletion requests in their train
replies, runs the deletion step between two rounds:

1. what the unlearner needs, gathered the federated way (:mod:`.gathering`): D_f from the
   requesting clients, a sample of retained data from every client, the per-round client
   updates kept during training, the clients' GAN (:mod:`.generator`);
2. ``query.deletion_complete``: the clients drop D_f for good. The order is sent, not waited
   for: the server unlearns while the clients carry it out, and collects the replies before
   any client trains or scores again (at once for methods that train on the clients). The
   relay's candidates score the model before unlearning in the same exchange, so the
   relay's first request only scores the unlearned one;
3. the unlearner (any :class:`fedforget.unlearning.Unlearner`) on the server's device; methods
   that train on the clients do so with ``train.local`` messages (on retained data only);
4. if the method includes it (paper 000's), the recovery relay (:mod:`.relay`);

then FedAvg continues. :class:`Retrain` replaces step 3 by retraining from the initial
weights without the deleted data (baseline B1).

The class only sequences these steps; its parts each own one concern: settings
(:mod:`.settings`), messages and faults (:mod:`.messaging`), requests and the record
(:mod:`.ledger`), gathering, the relay and the generator co-training.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Iterable
from logging import INFO
from typing import ClassVar

import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, Result

from fedforget import protocol as P
from fedforget.data.sources import ArrayDataset
from fedforget.federated import as_history
from fedforget.gan import ConditionalGan
from fedforget.models import ClassifierModel
from fedforget.recovery import ClientScore, validation_objective
from fedforget.report import RunObserver
from fedforget.strategies.gathering import Gathering, client_update
from fedforget.strategies.generator import GeneratorCoTraining
from fedforget.strategies.ledger import Bookkeeping, DeletionLedger, DeletionRecord
from fedforget.strategies.messaging import (
    MessageConfigs,
    NodeMessenger,
    arrays_from,
    error_reasons,
    messages_to,
    numpy_state,
)
from fedforget.strategies.relay import RecoveryRelay
from fedforget.strategies.settings import StrategySettings
from fedforget.training import accuracy, load_optimizer_modules
from fedforget.unlearning import HistoryRound, Unlearner, UnlearningContext

TRAINING_EXTRAS: dict[str, tuple[str, str, str]] = {
    "synthetic": (P.DISTIL, P.DISTIL_SECONDS, "distillation_client_seconds"),  # QuickDrop
    "auxiliary": (P.AUXILIARY, P.AUXILIARY_SECONDS, "auxiliary_client_seconds"),  # FedAU
}
"""Needs met by extra client work during FedAvg training: need -> (the flag the training
messages carry, the metric of the clients' seconds on it, the DeletionRecord field summing
them)."""

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
        Makes the federation's conditional GAN, which the clients then train next to the
        classifier, for unlearners that need it (the ``generator`` need, MuGAN).
    validation : ArrayDataset, optional
        The experimenter's declared validation set (never client data): distill's natural
        target reads it, and it is the relay's objective (``recovery.objective``).
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
        build_gan: Callable[[], ConditionalGan] | None = None,
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
        needs = unlearner.needs if unlearner is not None else frozenset()
        self.keeps_history = "history" in needs
        self.trains_generator = "generator" in needs
        self.training_extras = frozenset(needs & TRAINING_EXTRAS.keys())
        """The extra client work during training (QuickDrop's distillation, FedAU's heads)."""
        self.forget_with_request = "forget" in needs and not settings.unlearn_on_client
        """Whether a client sends D_f with its deletion request (in the reply that reports
        it), saving the deletion step a round trip: only when the server unlearns on D_f."""
        self.auxiliary_moves_body = True
        """Whether FedAU's heads may train the body too (not when ``compare`` branches share
        the training: every branch must start from the same model)."""
        self.history: list[HistoryRound] = []
        self.round_seconds: list[float] = []
        self.initial_arrays: ArrayRecord | None = None
        message_config = settings.message_config()
        self.configs = MessageConfigs(message_config, settings.num_classes, settings.seed)
        self.ledger = DeletionLedger(settings.mode, settings.forget_classes)
        self.messenger = NodeMessenger(
            settings.timeout, settings.min_available_nodes, self.ledger.client_of, self._fault
        )
        parts = (self.messenger, self.ledger, self.configs, self.observer)
        self.gathering = Gathering(settings, *parts, validation=validation)
        on_validation = functools.partial(
            validation_objective, settings.recovery, validation, build_model, device=self.device
        )
        self.relay = RecoveryRelay(
            settings.recovery, settings.relay_lr, *parts, objective=on_validation
        )
        self.generator = GeneratorCoTraining(build_gan, settings.generator_clients, self.deletion)
        self.gathered_forget: ArrayDataset | None = None  # D_f of the last server-side step
        self._relay_scoring: tuple[ArrayRecord, list[int]] | None = None
        """The model before unlearning and the relay's candidates, which score it while the
        server unlearns (sent with the order to drop D_f)."""
        self._before_scores: dict[int, ClientScore] | None = None  # what they reported
        self.nodes_measure_forget = settings.mode == "requests"
        """Whether the deleting nodes score the models on their own D_f (``query.forget_eval``):
        on by default for node-side requests, whose D_f the server cannot measure."""

    @property
    def deletion(self) -> DeletionRecord:
        """What the deletion step did (see :class:`DeletionRecord`)."""
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
        extras = {TRAINING_EXTRAS[need][0]: 1 for need in sorted(self.training_extras)}
        if P.AUXILIARY in extras:  # 1: W_a's loss may train the body too, 0: W_a alone
            extras[P.AUXILIARY] = int(self.auxiliary_moves_body)
        config = ConfigRecord({**dict(config), **self._round_entries(server_round), **extras})
        record = RecordDict({P.ARRAYS: arrays, P.CONFIG: config})
        rng = self.configs.rng
        nodes = self.messenger.sample(grid, self.fraction_train, self.min_train_nodes, rng)
        if not self.trains_generator:
            return messages_to(record, nodes, self.train_message)
        return self.generator.train_messages(record, nodes, rng)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg aggregation, after noting pending deletions and deleted-sample passes."""
        replies = list(replies)
        for reply in replies:
            if not reply.has_error():
                self.ledger.note_train_reply(reply)  # partition ids first: they order replies
        replies.sort(key=lambda r: self.messenger.order_key(r.metadata.src_node_id))
        good = [reply for reply in replies if not reply.has_error()]
        for need in self.training_extras:
            _, metric, field = TRAINING_EXTRAS[need]
            seconds = sum(float(reply.content[P.METRICS].get(metric, 0.0)) for reply in good)
            setattr(self.deletion, field, getattr(self.deletion, field) + seconds)
        if self.trains_generator:
            self.generator.aggregate(good)
        return super().aggregate_train(server_round, replies)

    def _round_entries(self, server_round: int) -> dict:
        """A FedAvg round's config entries, and whether a request should carry its D_f."""
        return {
            **self.configs.for_round(server_round),
            P.ATTACH_FORGET: int(self.forget_with_request),
        }

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
        if self.nodes_measure_forget and self.deletion.round and result.arrays is not None:
            self.gathering.node_forget_accuracy(grid, self.deletion.nodes, {"final": result.arrays})
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
        self.keeps_history = any(branch.keeps_history for branch in branches)
        self.trains_generator = any(branch.trains_generator for branch in branches)
        self.training_extras = frozenset().union(*(b.training_extras for b in branches))
        self.forget_with_request = any(branch.forget_with_request for branch in branches)
        self.auxiliary_moves_body = False  # the branches share this training's model

    def take_over(self, parent: FederatedUnlearning) -> None:
        """Continue from ``parent``'s federation state (a ``compare`` branch from its base)."""
        self.begin(parent.initial_arrays)
        self.round_seconds = list(parent.round_seconds)
        self.ledger.take_over(parent.ledger)
        self.messenger.exclude(parent.messenger.excluded)
        if self.keeps_history:
            self.history = list(parent.history)
        if self.trains_generator:
            self.generator.take_over(parent.generator)
        for need in self.training_extras:
            field = TRAINING_EXTRAS[need][2]
            setattr(self.deletion, field, getattr(parent.deletion, field))

    def _forgotten_classes(self, nodes: list[int]) -> tuple[int, ...]:
        """The classes a class deletion (configured, or named by node-side requests) forgets."""
        if self.ledger.deletion_mode(nodes) != "class":
            return ()
        return self.ledger.deletion_classes(nodes)

    def carry_out_deletion(self, grid: Grid, server_round: int, arrays: ArrayRecord) -> ArrayRecord:
        """The deletion step now, for the pending requests; returns the new global weights."""
        nodes = self.ledger.open_deletion(server_round)
        self._log_requests(server_round)
        self.observer.checkpoint("before_deletion", numpy_state(arrays))
        traffic = self.messenger.traffic.snapshot()
        started = time.perf_counter()
        seed = self.settings.seed + server_round
        self._relay_scoring = None
        if self.uses_relay and self.relay.prescores(self._forgotten_classes(nodes)):
            leaving = nodes if self.settings.client_leaves else ()
            self._relay_scoring = (arrays, self.relay.candidates(grid, seed, leaving))
        self._before_scores = None
        unlearned = self.unlearn_step(grid, server_round, arrays, nodes)
        self.deletion.unlearning_seconds = time.perf_counter() - started
        log(
            INFO,
            "deletion: unlearning (%s) done in %.1f s%s",
            self.unlearner.name if self.unlearner is not None else "retrain",
            self.deletion.unlearning_seconds,
            self._forget_accuracy_text(unlearned),
        )
        self.observer.checkpoint("after_unlearning", numpy_state(unlearned))
        started = time.perf_counter()
        recovered = unlearned
        if self.uses_relay:
            budget = self._relay_budget(self.deletion.unlearning_seconds)
            prescored = self._relay_scoring is not None and self._before_scores is not None
            recovered = self.relay.run(
                grid,
                unlearned,
                seed,
                before=arrays,
                budget_seconds=budget,
                candidates=self._relay_scoring[1] if prescored else None,
                before_scores=self._before_scores if prescored else None,
                forget_classes=self._forgotten_classes(nodes),
            )
        self.deletion.recovery_seconds = time.perf_counter() - started
        self.ledger.close_deletion(self.messenger.traffic.since(traffic))
        self.observer.checkpoint("after_recovery", numpy_state(recovered))
        if self.nodes_measure_forget:
            models = {
                "before_deletion": arrays,
                "after_unlearning": unlearned,
                "after_recovery": recovered,
            }
            self.gathering.node_forget_accuracy(grid, self.deletion.nodes, models)
        faults = len(self.deletion.faults)
        log(INFO, "deletion: step of round %d done, %d node faults so far", server_round, faults)
        return recovered

    def _relay_budget(self, unlearning_seconds: float) -> float | None:
        """Seconds left for the relay: ``budget_rounds`` median FedAvg rounds less unlearning."""
        rounds = self.settings.recovery.budget_rounds
        if rounds is None or not self.round_seconds:
            return None
        return max(0.0, rounds * statistics.median(self.round_seconds) - unlearning_seconds)

    def _log_requests(self, server_round: int) -> None:
        """Flower's log: which clients asked for a deletion, how many samples, which requests."""
        record = self.deletion
        log(
            INFO,
            "deletion: requests after round %d from clients %s (%d samples)",
            server_round,
            record.clients,
            record.forget_samples,
        )
        for entry in record.requests:
            if entry["round"] == server_round:
                named = f", requests {entry['requests']}" if entry["requests"] else ""
                classes = f", classes {entry['classes']}" if entry["classes"] else ""
                log(
                    INFO,
                    "deletion:   client %d (node %d): %d samples%s%s",
                    entry["client"],
                    entry["node"],
                    entry["samples"],
                    classes,
                    named,
                )

    def _forget_accuracy_text(self, unlearned: ArrayRecord) -> str:
        """``; accuracy on the gathered D_f x %`` when this step gathered D_f on the server."""
        forget, self.gathered_forget = self.gathered_forget, None
        if forget is None or len(forget) == 0:
            return ""
        value = accuracy(self.model_from(unlearned), forget, self.device)
        return f"; accuracy on the gathered D_f {value:.1%}"

    @property
    def uses_relay(self) -> bool:
        """Whether the deletion step ends with the recovery relay (the method includes it)."""
        enabled = self.settings.recovery.enabled
        return enabled and self.unlearner is not None and self.unlearner.uses_relay

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
            arrays, info = self._fedavg_round(grid, server_round, arrays, train_config, phase)
            info["round_seconds"] = time.perf_counter() - started
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
                arrays = self.carry_out_deletion(grid, server_round, arrays)
                result.arrays = arrays
        return result

    def run_reference(self, grid: Grid, num_rounds: int) -> ArrayRecord:
        """The reference: FedAvg from w_0 without the deleted data (and no GAN alongside)."""
        self.trains_generator = False
        self.training_extras = frozenset()
        self.forget_with_request = False
        result = self.run_rounds(
            grid, self.initial_arrays, num_rounds, "reference", handle_deletions=False
        )
        return result.arrays

    def _fedavg_round(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, config: ConfigRecord, phase: str
    ) -> tuple[ArrayRecord, dict]:
        passes = self.bookkeeping.total
        self.ledger.compute_seconds = 0.0
        self.messenger.new_round()
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
        if phase == "federated" and self.keeps_history:
            trained = [client_update(r) for r in replies if not r.has_error()]
            self.history.append(as_history(server_round, numpy_state(arrays), trained))
        info = {
            "clients": len(replies) - failures,
            "failures": failures,
            "exchange_seconds": exchange_seconds,
            "client_compute_seconds": self.ledger.compute_seconds,
            "train_loss": float(metrics[P.TRAIN_LOSS]) if metrics else float("nan"),
            "deleted_sample_passes": self.bookkeeping.total - passes,
        }
        return new_arrays, info

    # ------------------------------------------------------------------ deletion step
    def _post_deletion(self, before: ArrayRecord, aggregated: ArrayRecord) -> ArrayRecord:
        """The unlearner's say on a FedAvg round after its deletion (FedOSD's projection)."""
        state = numpy_state(aggregated)
        adjusted = self.unlearner.adjust_update(numpy_state(before), state)
        return aggregated if adjusted is state else arrays_from(adjusted)

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Gather what the unlearner needs, tell the clients to drop D_f, unlearn."""
        if self.unlearner is None:
            raise RuntimeError("FederatedUnlearning needs an unlearner")
        if self.settings.unlearn_on_client:
            arrays, done = self.gathering.unlearn_on_clients(
                grid, arrays, self.initial_arrays, nodes, self.settings.seed + server_round
            )
            self.gathering.complete_deletion(grid, done)
            return arrays
        needs = self.unlearner.needs
        history = tuple(self.history) if "history" in needs else ()
        scoring = self._relay_scoring
        request, completion = self.gathering.prepare(
            grid, needs, nodes, history, self.generator, scoring
        )
        if "rounds" in needs:  # the clients train during unlearning: D_f must be gone first
            self.gathering.finish_completion(grid, completion)
        context = UnlearningContext(
            initial_state=numpy_state(self.initial_arrays),
            build_model=self.build_model,
            device=self.device,
            seed=self.settings.seed + server_round,
            progress=self.observer.progress,
            federated_train=self.gathering.client_training(grid) if "rounds" in needs else None,
            local_epochs=self.settings.local_epochs,
            local_lr=self.settings.local_lr,
        )
        model = self.model_from(arrays)
        self.unlearner.check_model(model)
        unlearned = self.unlearner.unlearn(model, request, context)
        before_scores = self.gathering.finish_completion(grid, completion)  # arrived meanwhile
        self._before_scores = before_scores if scoring is not None else None
        self.gathered_forget = request.forget
        return ArrayRecord(unlearned.cpu().state_dict())

    def retrain_from_initial(self, grid: Grid, server_round: int, nodes: list[int]) -> ArrayRecord:
        """Drop D_f at the clients and rerun ``server_round`` FedAvg rounds from w_0."""
        self.gathering.complete_deletion(grid, nodes)
        result = self.run_rounds(
            grid, self.initial_arrays, server_round, "retrain", handle_deletions=False
        )
        return result.arrays

    def verify_deletion(
        self, grid: Grid, arrays: ArrayRecord, method: str, clients: int, folder: str = ""
    ) -> list[dict]:
        """The first ``clients`` deleting clients verify ``arrays`` (see ``Gathering``)."""
        return self.gathering.verification(grid, arrays, method, clients, folder)

    # ------------------------------------------------------------------ helpers
    def model_from(self, arrays: ArrayRecord) -> ClassifierModel:
        """A fresh model with ``arrays``."""
        model = self.build_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        return model

    def _fault(self, fault: dict) -> None:
        self.ledger.record_fault(fault)
        self.observer.progress("fault", len(self.deletion.faults), 0, {})


class Retrain(FederatedUnlearning):
    """Baseline B1: at the deletion, retrain from the initial weights without D_f.

    The deleting clients drop D_f first; then FedAvg reruns the rounds played so far from
    w_0 on the retained data, and the run continues as usual. No relay is needed.
    """

    def __init__(self, settings: StrategySettings, **parts: object) -> None:
        super().__init__(settings, unlearner=None, **parts)  # type: ignore[arg-type]

    def unlearn_step(
        self, grid: Grid, server_round: int, arrays: ArrayRecord, nodes: list[int]
    ) -> ArrayRecord:
        """Drop D_f at the clients and rerun ``server_round`` rounds from w_0."""
        return self.retrain_from_initial(grid, server_round, nodes)


__all__ = ["Bookkeeping", "DeletionRecord", "FederatedUnlearning", "ModelFactory", "Retrain"]
