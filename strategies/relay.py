"""The recovery relay of paper 000 (IV.C.3) on Flower messages.

The policy is :func:`fedforget.recovery.run_relay` (bounded cost, several weakest clients
per hop with a proximal term, a hop kept only when it raises the objective: the declared
validation set's accuracy, else the clients' sample-weighted local accuracy); this module
supplies its two callbacks as messages: ``query.local_eval`` (the candidates score the
weights on their local data) and ``train.relay`` (the hop's clients train them, in
parallel, with the FedProx term). A node that fails is skipped and recorded.

When the relay restores the model before unlearning and its objective is the candidates'
scores (no declared validation set), the strategy picks the candidates
(:meth:`RecoveryRelay.candidates`) before it unlearns and has them score that model while the
server unlearns (the deleting ones in their ``query.deletion_complete``, after dropping D_f);
the relay then starts from those scores (``before_scores``) instead of asking again, so its
first hop costs one query of the unlearned model only. On a validation set the candidates
score a model only when a hop is about to pick the weakest of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import INFO
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.common.logger import log
from flwr.serverapp import Grid

from fedforget import protocol as P
from fedforget.config import RecoveryConfig
from fedforget.federated import ClientUpdate, State
from fedforget.recovery import (
    ClientScore,
    Hop,
    RelayResult,
    ValidateFn,
    choose_candidates,
    run_relay,
)
from fedforget.report import RunObserver
from fedforget.strategies.ledger import DeletionLedger
from fedforget.strategies.messaging import NodeMessenger, arrays_from, numpy_state


class RecoveryRelay:
    """Relays the model through the weakest clients while that raises their accuracy.

    Parameters
    ----------
    settings : RecoveryConfig
        ``min_accuracy``, ``max_hops``, ``candidates``, ``clients_per_hop``,
        ``proximal_mu`` and the relay's local epochs.
    lr : float
        Learning rate of the first hop (halved after every rejected hop).
    messenger : NodeMessenger
        Sends the messages and records the nodes that fail.
    ledger : DeletionLedger
        Receives the hops, the weakest score and the relay trainings' replies.
    make_config : Callable[..., ConfigRecord]
        Builds each message's config.
    observer : RunObserver
        Receives the relay's progress.
    objective : Callable[[Sequence[int]], ValidateFn | None], optional
        ``forgotten classes -> validate``: the objective on the declared validation set
        without those classes (:func:`fedforget.recovery.validation_objective`); where it
        gives ``None``, the candidates' sample-weighted local accuracies.
    """

    def __init__(
        self,
        settings: RecoveryConfig,
        lr: float,
        messenger: NodeMessenger,
        ledger: DeletionLedger,
        make_config: Callable[..., ConfigRecord],
        observer: RunObserver,
        *,
        objective: Callable[[Sequence[int]], ValidateFn | None] | None = None,
    ) -> None:
        self.settings = settings
        self.objective = objective
        self.lr = lr
        self.messenger = messenger
        self.ledger = ledger
        self.make_config = make_config
        self.observer = observer

    @property
    def restores(self) -> bool:
        """Whether the relay's standard is the model before unlearning (``restore``)."""
        return self.settings.enabled and self.settings.restore

    def prescores(self, forget_classes: Sequence[int] = ()) -> bool:
        """Whether the candidates' scores of the model before unlearning are of use: only
        when they are the objective (restoring, no validation set for these classes)."""
        on_validation = self.objective is not None and self.objective(forget_classes) is not None
        return self.restores and not on_validation

    def candidates(self, grid: Grid, seed: int, leaving: Iterable[int] = ()) -> list[int]:
        """The clients the relay will ask (:func:`choose_candidates`), known before it runs:
        the strategy has them score the model before unlearning while it unlearns."""
        gone = set(leaving)
        nodes = [n for n in self._by_client(self.messenger.active_nodes(grid)) if n not in gone]
        return choose_candidates(nodes, self.settings.candidates, seed=seed)

    def _by_client(self, nodes: Iterable[int]) -> list[int]:
        """Nodes in client order: node ids change from run to run, client ids do not."""
        return sorted(nodes, key=self.messenger.order_key)

    def run(
        self,
        grid: Grid,
        arrays: ArrayRecord,
        seed: int = 0,
        before: ArrayRecord | None = None,
        budget_seconds: float | None = None,
        candidates: list[int] | None = None,
        before_scores: Mapping[int, ClientScore] | None = None,
        forget_classes: Sequence[int] = (),
    ) -> tuple[ArrayRecord, dict[str, Any]]:
        """The relayed model (``arrays`` itself when no hop improved it) and the relay's
        figures (the deletion record's ``relay_*`` fields).

        ``before`` (the model before unlearning) sets the standard the relay restores when
        ``settings.restore`` is on; ``budget_seconds`` is the wall time it may spend;
        ``candidates`` and ``before_scores`` are what :meth:`candidates` chose and their
        scores of ``before``, when the caller had them scored already; ``forget_classes``
        (a class deletion's) are left out of the validation objective.
        """
        validate = self.objective(forget_classes) if self.objective is not None else None
        nodes = self._by_client(
            candidates if candidates is not None else self.messenger.active_nodes(grid)
        )
        start = numpy_state(arrays)
        self.observer.progress("recovery", 0, self.settings.max_hops, {})
        result = run_relay(
            start,
            nodes,
            lambda state, chosen: self.local_scores(grid, state, chosen),
            lambda state, chosen, lr, mu: self.train(grid, state, chosen, lr, mu),
            self.settings,
            self.lr,
            validate=validate,
            seed=seed,
            before=None if before is None else numpy_state(before),
            before_scores=before_scores,
            budget_seconds=budget_seconds,
        )
        figures = {
            "relay_hops": len(result.hops),
            "relay_hops_kept": sum(hop.kept for hop in result.hops),
            "relay_objective_start": _finite(result.start_objective),
            "relay_objective": _finite(result.objective),
            "relay_objective_before": _finite(result.before_objective),
            "relay_objective_source": "clients" if validate is None else "validation",
            "relay_min_accuracy": _finite(result.objective),
            "relay_client_calls": result.evaluations + result.trainings,
            "relay_stop": result.stopped,
            "relay_trace": [self._trace(hop) for hop in result.hops],
        }
        self._log(result)
        self.observer.progress(
            "recovery",
            figures["relay_hops"],
            self.settings.max_hops,
            {"kept": figures["relay_hops_kept"], "objective": result.objective},
        )
        if result.state is start:
            return arrays, figures
        return arrays_from(result.state), figures

    def _trace(self, hop: Hop) -> dict:
        """A hop as the run summary records it (client ids, not Flower node ids)."""
        return {
            "clients": sorted(self.ledger.client_of(n) for n in hop.trained_on),
            "lr": hop.lr,
            "before": hop.before,
            "after": hop.after,
            "kept": hop.kept,
            "p_value": _finite(hop.p_value),
        }

    def _log(self, result: RelayResult) -> None:
        """Flower's log: each hop (clients, kept or not, objective) and where the relay ended."""
        for number, hop in enumerate(result.hops, start=1):
            clients = sorted(self.ledger.client_of(n) for n in hop.trained_on)
            test = "" if math.isnan(hop.p_value) else f" (sign test p = {hop.p_value:.3g})"
            log(
                INFO,
                "deletion: relay hop %d on clients %s (lr %.3g): objective %.4f -> %.4f, %s%s",
                number,
                clients,
                hop.lr,
                hop.before,
                hop.after,
                "kept" if hop.kept else "discarded",
                test,
            )
        log(
            INFO,
            "deletion: relay done after %d hops (%d kept, stop: %s): objective %.4f (start %.4f)",
            len(result.hops),
            sum(hop.kept for hop in result.hops),
            result.stopped,
            result.objective,
            result.start_objective,
        )

    def local_scores(
        self, grid: Grid, states: Sequence[State], nodes: Sequence[int]
    ) -> list[dict[int, ClientScore]]:
        """Per model: node id -> its local accuracy of the model and the samples it scored.

        One ``query.local_eval`` per node carries every model (the first as ``arrays``, the
        others as ``arrays:<i>``): a message's fixed cost dominates scoring 1,000 samples.
        """
        models = {P.ARRAYS: arrays_from(states[0])}
        models.update({P.extra_model(i): arrays_from(s) for i, s in enumerate(states) if i})
        record = RecordDict({**models, P.CONFIG: self.make_config()})
        asked = [n for n in nodes if n not in self.messenger.suspects]  # failed: not again
        replies = self.messenger.query(grid, asked, P.LOCAL_EVAL, record)
        return [scores_in(replies, i) for i in range(len(states))]

    def train(
        self, grid: Grid, state: State, nodes: Sequence[int], lr: float, mu: float
    ) -> list[ClientUpdate]:
        """The nodes' relay trainings of ``state`` (in parallel); failed nodes are skipped."""
        config = self.make_config(
            **{
                P.EPOCHS: self.settings.local_epochs,
                P.LEARNING_RATE: lr,
                P.PROXIMAL_MU: mu,
                P.MAX_SAMPLES: self.settings.hop_samples,
            }
        )
        record = RecordDict({P.ARRAYS: arrays_from(state), P.CONFIG: config})
        asked = [n for n in nodes if n not in self.messenger.suspects]
        replies = self.messenger.query(grid, asked, P.RELAY_TRAIN, record)
        updates = []
        for reply in replies:
            self.ledger.note_train_reply(reply)
            count = int(reply.content[P.METRICS][P.NUM_EXAMPLES])
            updates.append(ClientUpdate(numpy_state(reply.content[P.ARRAYS]), count))
        return updates


def scores_in(replies: Iterable[Message], model: int = 0) -> dict[int, ClientScore]:
    """Node id -> its score of the ``model``-th model of a ``query.local_eval`` (or of a
    ``query.deletion_complete`` that carried a model); replies without one are left out."""
    key = P.extra_model(model, P.ACCURACY) if model else P.ACCURACY
    scores = {}
    for reply in replies:
        metrics = reply.content[P.METRICS]
        count = int(metrics.get(P.NUM_EXAMPLES, 0))
        if count > 0 and key in metrics:
            scores[reply.metadata.src_node_id] = ClientScore(float(metrics[key]), count)
    return scores


def _finite(value: float) -> float | None:
    return None if math.isnan(value) else float(value)
