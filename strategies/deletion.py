"""One deletion step, in order: open, gather, drop D_f, unlearn, relay, close.

:class:`DeletionStep` sequences the parts of a step for a
:class:`~fedforget.strategies.FederatedUnlearning` and collects what each returns (the
needs' figures, the relay's, the seconds) into the :class:`~.ledger.StepFigures` from which
the ledger assembles the step's record. How the model is unlearned is the strategy's
(``unlearn``: a method on the server, a chain on the clients, a retrain); the server-side
method's part, :meth:`DeletionStep.unlearn_on_server`, is here.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from logging import INFO

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedforget.data.modes import DeletionMode
from fedforget.data.sources import ArrayDataset
from fedforget.models import ClassifierModel
from fedforget.needs import GatherStep
from fedforget.recovery import ClientScore
from fedforget.report import RunObserver
from fedforget.report.sanity import chance_level, near_chance
from fedforget.strategies.gathering import Gathering
from fedforget.strategies.ledger import DeletionLedger, StepFigures
from fedforget.strategies.messaging import NodeMessenger, numpy_state
from fedforget.strategies.needset import NeedSet
from fedforget.strategies.relay import RecoveryRelay
from fedforget.strategies.settings import StrategySettings
from fedforget.training import accuracy
from fedforget.unlearning import Unlearner, UnlearningContext, UnlearningRequest

UnlearnFn = Callable[[Grid, int, ArrayRecord, list[int]], ArrayRecord]
"""``(grid, round, weights, deleting nodes) -> unlearned weights``."""


@dataclass
class DeletionStep:
    """The parts a deletion step uses (the strategy's), and the step under way.

    Attributes
    ----------
    settings, messenger, ledger, gathering, relay, needset, observer
        The strategy's parts.
    build_model : Callable
        A fresh model of the federation's architecture (:meth:`serve` sets it).
    device : torch.device
        Where the server unlearns.
    validation : ArrayDataset or None
        The declared validation set (the request carries it).
    orders_ride : bool
        Whether a FedAvg round follows the step (the strategy sets it): the order to drop
        D_f may then ride on the next message to each deleting node.
    """

    settings: StrategySettings
    messenger: NodeMessenger
    ledger: DeletionLedger
    gathering: Gathering
    relay: RecoveryRelay
    needset: NeedSet
    observer: RunObserver
    build_model: Callable[[], ClassifierModel] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    validation: ArrayDataset | None = None
    orders_ride: bool = False

    def serve(
        self,
        build_model: Callable[[], ClassifierModel],
        device: torch.device,
        validation: ArrayDataset | None,
    ) -> None:
        """The federation's model, the server's device and the declared validation set."""
        self.build_model, self.device, self.validation = build_model, device, validation

    def __post_init__(self) -> None:
        self.messenger.on_order_done = self.ledger.confirm_orders  # drop orders that rode
        self.figures = StepFigures()
        self.relay_scoring: tuple[ArrayRecord, list[int]] | None = None
        """The model before unlearning and the relay's candidates, which score it while the
        server unlearns (sent with the order to drop D_f)."""
        self.before_scores: dict[int, ClientScore] | None = None  # what they reported
        self.node_checks: list[tuple[int, dict[str, ArrayRecord]]] = []
        """Per step (its index): the models its deleting nodes score at the run's end."""
        self.gathered_forget: ArrayDataset | None = None  # D_f of a server-side unlearning

    def carry_out(
        self,
        grid: Grid,
        server_round: int,
        arrays: ArrayRecord,
        unlearn: UnlearnFn,
        unlearner: Unlearner | None,
        round_seconds: list[float],
    ) -> ArrayRecord:
        """The deletion step for the pending requests; returns the new global weights."""
        nodes = self.ledger.open_deletion(server_round)
        self.ledger.log_requests(server_round)
        self.observer.checkpoint("before_deletion", numpy_state(arrays))
        traffic = self.messenger.traffic.snapshot()
        seed = self.settings.seed + server_round
        self.figures, self.relay_scoring, self.before_scores = StepFigures(), None, None
        classes = self.forgotten_classes(nodes)
        skip = unlearner is not None and not self.learned(arrays)
        relays = self.settings.recovery.enabled and unlearner is not None and unlearner.uses_relay
        relays = relays and not skip
        if relays and self.relay.prescores(classes):
            leaving = nodes if self.settings.clients_leave else ()
            self.relay_scoring = (arrays, self.relay.candidates(grid, seed, leaving))
        started = time.perf_counter()
        if skip:
            self.drop_only(grid, nodes)
            unlearned = arrays
        else:
            unlearned = unlearn(grid, server_round, arrays, nodes)
        self.figures.unlearning_seconds = time.perf_counter() - started
        if not skip:
            self._log_unlearning(unlearned, unlearner)
        self.observer.checkpoint("after_unlearning", numpy_state(unlearned))
        started = time.perf_counter()
        recovered = unlearned
        if relays:
            prescored = self.relay_scoring is not None and self.before_scores is not None
            recovered, self.figures.relay = self.relay.run(
                grid,
                unlearned,
                seed,
                before=arrays,
                budget_seconds=self._relay_budget(round_seconds),
                candidates=self.relay_scoring[1] if prescored else None,
                before_scores=self.before_scores if prescored else None,
                forget_classes=classes,
            )
        self.figures.recovery_seconds = time.perf_counter() - started
        self.figures.needs = self.needset.figures()
        self.ledger.close_deletion(self.figures, self.messenger.traffic.since(traffic))
        self.observer.checkpoint("after_recovery", numpy_state(recovered))
        if self.settings.mode.node_side:
            models = {"before_deletion": arrays, "after_unlearning": unlearned}
            models["after_recovery"] = recovered
            if self.orders_ride:  # with the run's final model: a round trip less between rounds
                self.node_checks.append((len(self.ledger.steps) - 1, models))
            else:
                self.gathering.node_forget_accuracy(grid, self.ledger.record.nodes, models)
        faults = len(self.ledger.faults)
        log(INFO, "deletion: step of round %d done, %d node faults so far", server_round, faults)
        return recovered

    def score_on_nodes(self, grid: Grid, final: ArrayRecord) -> None:
        """The deleting nodes score the steps' models and ``final`` on their deleted samples.

        A step followed by a round leaves its models here (:attr:`node_checks`): on a
        deployment a query between two rounds costs a round trip, and the deleted samples
        stay on their nodes (never trained on) until the run's end.
        """
        checks, self.node_checks = self.node_checks, []
        last = len(self.ledger.steps) - 1
        if not checks or checks[-1][0] != last:
            checks.append((last, {}))
        for step, models in checks:
            if step == last:
                models = {**models, "final": final}
            nodes = self.ledger.steps[step].nodes
            self.gathering.node_forget_accuracy(grid, nodes, models, step)

    def learned(self, arrays: ArrayRecord) -> bool:
        """Whether the model learned anything, as the declared validation set tells.

        Records the model's validation accuracy and the set's chance level in the step's
        figures. ``False`` (with ``deletion.untrained = 'drop'``) when the accuracy is within
        :data:`~fedforget.report.sanity.NEAR_CHANCE` of chance: a model that learned nothing
        holds little of D_f, and unlearning it (then relaying to repair what unlearning cost)
        would spend rounds of compute on nothing. Without a validation set (or in the GAN task,
        whose model is no classifier) nothing tells, so the full step runs.
        """
        validation = self.validation
        if validation is None or not len(validation) or self.settings.config.task != "classify":
            return True
        model = self.build_model()
        model.load_state_dict(arrays.to_torch_state_dict())
        score = accuracy(model, validation, self.device)
        chance = chance_level(validation.y)
        self.figures.validation_accuracy_before, self.figures.validation_chance = score, chance
        if self.settings.config.deletion.untrained == "unlearn" or not near_chance(score, chance):
            return True
        self.figures.skipped = "untrained"
        return False

    def drop_only(self, grid: Grid, nodes: list[int]) -> None:
        """The deleting clients drop D_f; the model stays as it was (an untrained model)."""
        ride = self.order_rides(self.ledger.deletion_mode(nodes))
        self.gathering.finish_completion(
            grid, self.gathering.send_completion(grid, nodes, None, ride)
        )
        log(
            INFO,
            "deletion: the model had not learned (%.1f%% on the validation set, chance %.1f%%): "
            "D_f dropped, no unlearning and no relay",
            100 * self.figures.validation_accuracy_before,
            100 * self.figures.validation_chance,
        )

    def order_rides(self, mode: DeletionMode) -> bool:
        """Whether the order to drop D_f may ride on each deleting node's next message: a
        round follows, the clients stay, and no method trains on them during unlearning."""
        return self.orders_ride and not (self.needset.completes_first or mode.clients_leave)

    def forgotten_classes(self, nodes: list[int]) -> tuple[int, ...]:
        """The classes a class deletion (configured, or named by node-side requests) forgets."""
        if not self.ledger.deletion_mode(nodes).names_classes:
            return ()
        return self.ledger.deletion_classes(nodes)

    def _relay_budget(self, round_seconds: list[float]) -> float | None:
        """Seconds left for the relay: ``budget_rounds`` median FedAvg rounds less unlearning."""
        rounds = self.settings.recovery.budget_rounds
        if rounds is None or not round_seconds:
            return None
        budget = rounds * statistics.median(round_seconds)
        return max(0.0, budget - self.figures.unlearning_seconds)

    def gather_step(self, grid: Grid, nodes: list[int]) -> GatherStep:
        """The step as the needs see it: nodes, the mode their requests amount to, classes."""
        mode = self.ledger.deletion_mode(nodes)
        step_clients = self.ledger.current.clients if self.ledger.current else []
        leaving = tuple(step_clients) if mode.clients_leave else ()
        classes = self.ledger.deletion_classes(nodes)
        return GatherStep(grid, list(nodes), mode, classes, leaving, self.needset.unlearners)

    def unlearn_on_server(
        self,
        grid: Grid,
        server_round: int,
        model: ClassifierModel,
        nodes: list[int],
        unlearner: Unlearner,
        initial: ArrayRecord,
    ) -> ArrayRecord:
        """Gather what ``unlearner`` needs, tell the clients to drop D_f, unlearn ``model``."""
        step = self.gather_step(grid, nodes)
        gathered = self.needset.gather(step)
        self.figures.extra_bytes_from_clients = gathered.bytes_from_clients
        ride = self.order_rides(step.mode)
        completion = self.gathering.send_completion(grid, step.nodes, self.relay_scoring, ride)
        if self.needset.completes_first:  # the clients train during unlearning: D_f gone first
            self.gathering.finish_completion(grid, completion)
        fields = dict(gathered.request)
        forget = fields.pop("forget", None)
        request = UnlearningRequest(
            forget=forget if forget is not None else self._no_data(fields.get("retain")),
            num_classes=self.settings.num_classes,
            mode=step.mode,
            forget_classes=step.forget_classes,
            leaving_clients=step.leaving,
            validation=self.validation,
            **fields,
        )
        context = UnlearningContext(
            initial_state=numpy_state(initial),
            build_model=self.build_model,
            device=self.device,
            seed=self.settings.seed + server_round,
            progress=self.observer.progress,
            local_epochs=self.settings.local_epochs,
            local_lr=self.settings.local_lr,
            **gathered.context,
        )
        unlearner.check_model(model)
        unlearned = unlearner.unlearn(model, request, context)
        before_scores = self.gathering.finish_completion(grid, completion)  # arrived meanwhile
        self.before_scores = before_scores if self.relay_scoring is not None else None
        self.gathered_forget = request.forget
        return ArrayRecord(unlearned.cpu().state_dict())

    def _log_unlearning(self, unlearned: ArrayRecord, unlearner: Unlearner | None) -> None:
        """Flower's log: the method, its time, its accuracy on the D_f the step gathered."""
        forget, self.gathered_forget = self.gathered_forget, None
        on_forget = ""
        if forget is not None and len(forget):
            model = self.build_model()
            model.load_state_dict(unlearned.to_torch_state_dict())
            on_forget = f"; accuracy on the gathered D_f {accuracy(model, forget, self.device):.1%}"
        name = unlearner.name if unlearner is not None else "retrain"
        seconds = self.figures.unlearning_seconds
        log(INFO, "deletion: unlearning (%s) done in %.1f s%s", name, seconds, on_forget)

    def _no_data(self, like: ArrayDataset | None) -> ArrayDataset:
        """An empty D_f (of the federation's image shape) for methods that never receive it."""
        if like is not None:
            return like.subset(np.empty(0, dtype=np.int64))
        shape = self.settings.image_shape
        return ArrayDataset(x=np.empty((0, *shape), np.float32), y=np.empty(0, np.int64))
