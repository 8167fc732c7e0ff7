"""The strategy's parts against a fake Grid with scripted replies (no Ray, no simulation).

Like Flower's own strategy tests, a :class:`FakeGrid` implements the ``Grid`` interface and
answers each pushed message at once through a per-node handler, so the deletion step, the
recovery relay and the fault handling run exactly as on a federation, in milliseconds.
"""

from __future__ import annotations

import itertools
import json
import logging
import re
from collections.abc import Callable, Iterable

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore.task_identity import TaskIdentity

from fedforget import protocol as P
from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import ArrayDataset, resolve_training
from fedforget.report.summary import DeletionSummary
from fedforget.strategies import FederatedUnlearning, Retrain, StrategySettings
from fedforget.strategies.ledger import DeletionLedger, StepFigures
from fedforget.strategies.messaging import NodeMessenger, Traffic, payload_bytes
from fedforget.strategies.relay import RecoveryRelay
from fedforget.unlearning import Unlearner, UnlearningContext, UnlearningRequest

Reply = RecordDict | str | None
"""A handler's answer: content, an error reason, or ``None`` (no reply: a timeout)."""
Handler = Callable[[Message], Reply]


@pytest.fixture(autouse=True)
def _server_identity():
    """What a ServerApp process knows about itself (messages are stamped with it)."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 0, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


class FakeGrid(Grid):
    """A Grid whose nodes answer each message at once with ``handlers[node](message)``."""

    def __init__(self, handlers: dict[int, Handler]) -> None:
        self.handlers = handlers
        self.sent: list[tuple[str, int]] = []  # (message type, node) in sending order
        self.contents: list[tuple[RecordDict, RecordDict | None]] = []  # (message, reply)
        self._replies: dict[str, Message] = {}
        self._ids = itertools.count()

    def set_run(self, run_id: int) -> None:  # pragma: no cover - not used by the strategy
        pass

    @property
    def run(self):  # pragma: no cover - not used by the strategy
        raise NotImplementedError

    def create_message(self, content, message_type, dst_node_id, group_id, ttl=None):
        return Message(content, dst_node_id, message_type, group_id=group_id)  # pragma: no cover

    def get_node_ids(self) -> Iterable[int]:
        return list(self.handlers)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = f"m{next(self._ids)}"
            node = message.metadata.dst_node_id
            self.sent.append((message.metadata.message_type, node))
            answer = self.handlers[node](message)
            self.contents.append(
                (message.content, answer if isinstance(answer, RecordDict) else None)
            )
            if isinstance(answer, str):
                self._replies[message.metadata.message_id] = Message(
                    Error(code=1, reason=f"Traceback...\n{answer}"), reply_to=message
                )
            elif answer is not None:
                self._replies[message.metadata.message_id] = Message(answer, reply_to=message)
            ids.append(message.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in list(message_ids) if i in self._replies]

    def send_and_receive(self, messages, *, timeout=None):  # pragma: no cover
        ids = list(self.push_messages(messages))
        return self.pull_messages(ids)

    def types_sent(self, node: int | None = None) -> list[str]:
        return [kind for kind, n in self.sent if node is None or n == node]


# ---------------------------------------------------------------------- a scripted client
class FakeClient:
    """A client of the fake federation: ``samples`` of data, ``forget`` of them to delete."""

    def __init__(
        self, partition: int, forget: int = 0, accuracy: float = 0.99, improves: bool = True
    ) -> None:
        self.partition = partition
        self.improves = improves  # whether its relay training repairs the model
        self.forget = forget
        self.deleted = False
        self.accuracy = accuracy
        self.forget_accuracy = 1.0  # on its deleted samples, of a model not zeroed
        self.fail: dict[str, str | None] = {}  # message type -> error reason (None: silent)
        self.configs: list[ConfigRecord] = []
        self.asks_from = 0  # the round from which it reports its deletion request
        self.attaches = True  # whether it sends D_f with its request when asked to
        self.round = 0
        self.orders = 0  # drop orders that rode on a message to it

    def __call__(self, message: Message) -> Reply:
        kind = message.metadata.message_type
        if P.CONFIG in message.content:
            self.configs.append(message.content[P.CONFIG])
            self.round = int(message.content[P.CONFIG].get(P.SERVER_ROUND, 0))
        if kind in self.fail:
            return self.fail[kind]
        ordered = P.DROP_ORDER in message.content
        if ordered:  # a drop order rode on the message: D_f goes before it is handled
            self.deleted = True
            self.orders += 1
        answer = self._answer(message, kind)
        if ordered and isinstance(answer, RecordDict):
            answer[P.METRICS][P.ORDER_DONE] = self.forget
        return answer

    def _answer(self, message: Message, kind: str) -> Reply:
        if kind in (P.TRAIN, P.RELAY_TRAIN, P.LOCAL_TRAIN):
            arrays = message.content[P.ARRAYS]
            if kind == P.RELAY_TRAIN and self.improves:
                self.accuracy = 1.0
            return self._round_reply(message, {P.ARRAYS: arrays})
        if kind == P.DELETION_STATUS:
            return self._round_reply(message, {})
        if kind in (P.FORGET_DATA, P.RETAIN_DATA):
            count = self.forget if kind == P.FORGET_DATA else 4
            data = self._data(count)
            return RecordDict({P.DATA: data, P.METRICS: MetricRecord({P.NUM_EXAMPLES: count})})
        if kind == P.DELETION_COMPLETE:
            self.deleted = True
            metrics = {P.NUM_FORGET: self.forget}
            if message.content.array_records:  # a relay candidate scores the model sent
                metrics.update({P.ACCURACY: self.accuracy, P.NUM_EXAMPLES: 10})
            return RecordDict({P.METRICS: MetricRecord(metrics)})
        if kind == P.LOCAL_EVAL:
            metrics = {P.ACCURACY: self.accuracy, P.NUM_EXAMPLES: 10}
            return RecordDict({P.METRICS: MetricRecord(metrics)})
        if kind == P.FORGET_EVAL:
            return RecordDict({P.METRICS: MetricRecord(self._forget_scores(message))})
        raise AssertionError(f"unexpected message {kind}")

    def _forget_scores(self, message: Message) -> dict[str, float | int]:
        """Its deleted samples' accuracy per model: ``forget_accuracy``, 0 once zeroed."""
        scores: dict[str, float | int] = {P.NUM_EXAMPLES: self.forget if self.deleted else 0}
        for phase, record in message.content.array_records.items():
            learned = any(np.any(a.numpy() != 0) for a in record.values())
            scores[f"{P.ACCURACY}:{phase}"] = self.forget_accuracy if learned else 0.0
        return scores

    def _data(self, count: int) -> ArrayRecord:
        x = np.full((count, 1, 2, 2), self.partition, np.float32)
        return ArrayRecord({"x": Array(x), "y": Array(np.full(count, 3, np.int64))})

    def _round_reply(self, message: Message, content: dict) -> RecordDict:
        """Metrics and the pending request; its D_f too when the config asks for it."""
        metrics = self._train_metrics()
        asked = int(message.content[P.CONFIG].get(P.ATTACH_FORGET, 0))
        if asked and self.attaches and metrics[P.NUM_FORGET]:
            content[P.DATA] = self._data(self.forget)
        return RecordDict({**content, P.METRICS: metrics})

    def _pending(self) -> int:
        return self.forget if not self.deleted and self.round >= self.asks_from else 0

    def _train_metrics(self) -> MetricRecord:
        pending = self._pending()
        return MetricRecord(
            {
                P.NUM_EXAMPLES: 20,
                P.PARTITION_ID: self.partition,
                P.COMPUTE_SECONDS: 0.5,
                P.DELETED_PASSES: 0 if self.deleted else self.forget,
                P.DELETION_DONE: int(self.deleted),
                P.DELETION_PENDING: int(pending > 0),
                P.NUM_FORGET: pending,
                P.TRAIN_LOSS: 0.1,
                P.GAN_SECONDS: 0.0,
            }
        )


class ZeroingUnlearner(Unlearner):
    """Forgets by zeroing the weights; remembers what it was given."""

    name = "zeroing"
    uses_relay = True
    seen: list[UnlearningRequest] = []

    def unlearn(self, model, request: UnlearningRequest, context: UnlearningContext):
        self.seen.append(request)
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.zero_()
        return model


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))


def _config(clients: int = 3, **deletion: object) -> SimulationConfig:
    values = {"mode": "class", "forget_classes": [3], "round": 1, **deletion}
    return SimulationConfig(
        clients=clients,
        data={"dataset": "digits"},
        train={"rounds": 2},
        deletion=values,
        # paper 000's absolute bar, no time budget: fake rounds take milliseconds
        recovery={"min_accuracy": 0.9, "max_hops": 2, "restore": False, "budget_rounds": None},
        message_timeout=1.0,
    )


def _strategy(config: SimulationConfig, unlearner: Unlearner | None = None) -> FederatedUnlearning:
    settings = StrategySettings.from_config(config, num_classes=2, image_shape=(1, 2, 2))
    if unlearner is None:
        return Retrain(settings, build_model=_model)
    return FederatedUnlearning(settings, unlearner=unlearner, build_model=_model)


def _initial() -> ArrayRecord:
    return ArrayRecord(_model().state_dict())


def _federation(**clients: FakeClient) -> tuple[FakeGrid, dict[int, FakeClient]]:
    nodes = {100 + c.partition: c for c in clients.values()}
    return FakeGrid(dict(nodes)), nodes


# ---------------------------------------------------------------------- the deletion step
def test_the_deletion_step_gathers_d_f_drops_it_unlearns_then_relays() -> None:
    grid, nodes = _federation(
        a=FakeClient(0), b=FakeClient(1, forget=5, accuracy=0.5), c=FakeClient(2)
    )
    unlearner = ZeroingUnlearner()
    unlearner.seen = []
    strategy = _strategy(_config(), unlearner)

    result = strategy.start(grid, _initial(), num_rounds=2)

    record = strategy.deletion
    assert (record.round, record.clients, record.nodes) == (1, [1], [101])
    assert record.forget_samples == record.need_figure("forget", "samples_received") == 5
    (request,) = unlearner.seen
    assert len(request.forget) == 5 and request.mode == "class" and request.forget_classes == (3,)
    # D_f came from the requesting client alone; it dropped it before any further training
    assert grid.types_sent(100).count(P.FORGET_DATA) == 0
    # the order to drop it rode on the first message 101 got after the request, before any
    # training (the relay's evaluation here; its hop and round 2 trained without D_f)
    sent_101 = grid.types_sent(101)
    to_101 = [c for (_, n), (c, _) in zip(grid.sent, grid.contents, strict=True) if n == 101]
    carried = [P.DROP_ORDER in content for content in to_101]
    assert carried.index(True) == 1 and carried.count(True) == 1 and nodes[101].orders == 1
    assert P.DELETION_COMPLETE not in sent_101 and sent_101.index(P.RELAY_TRAIN) > 1
    assert nodes[101].deleted and record.requests[0]["status"] == "confirmed"
    # the relay: the clients' mean accuracy (0.83 < 0.9) called for one hop, which raised it
    assert grid.types_sent(101).count(P.RELAY_TRAIN) == 1
    assert (record.relay_hops, record.relay_hops_kept, record.relay_objective) == (1, 1, 1.0)
    assert record.relay_objective_start == pytest.approx((0.99 + 0.5 + 0.99) / 3)
    # round 2 ran on the relayed model, and nothing was pending any more
    assert strategy.pending_deletions == {}
    assert all(np.all(a.numpy() == 0) for a in result.arrays.values())
    assert strategy.bookkeeping.deleted_passes_before == 5
    assert strategy.bookkeeping.deleted_passes_after == 0


def test_d_f_sent_with_the_request_is_not_asked_for_again() -> None:
    fetched = FakeClient(2, forget=3)
    fetched.attaches = False
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, forget=2), c=fetched)
    unlearner = ZeroingUnlearner()
    unlearner.seen = []
    _strategy(_config(), unlearner).start(grid, _initial(), num_rounds=1)
    assert grid.types_sent(101).count(P.FORGET_DATA) == 0  # it came with the training reply
    assert grid.types_sent(102).count(P.FORGET_DATA) == 1
    (request,) = unlearner.seen
    assert request.forget.x[:, 0, 0, 0].tolist() == [1, 1, 2, 2, 2]  # in partition order


def test_only_a_server_that_unlearns_on_d_f_asks_for_it_with_the_request() -> None:
    def asked(unlearner: Unlearner | None, **settings: object) -> set[int]:
        client = FakeClient(1, forget=2)
        grid, _ = _federation(a=FakeClient(0), b=client)
        config = _config(clients=2).model_copy(update=settings)
        _strategy(config, unlearner).start(grid, _initial(), num_rounds=1)
        train = [c for c in client.configs if P.ATTACH_FORGET in c]
        return {int(c[P.ATTACH_FORGET]) for c in train}

    assert asked(ZeroingUnlearner()) == {1}
    assert asked(None) == {0}  # retraining never looks at D_f


def test_the_relay_candidates_score_the_model_before_unlearning_with_the_drop_order() -> None:
    grid, nodes = _federation(
        a=FakeClient(0), b=FakeClient(1, forget=5, accuracy=0.5), c=FakeClient(2, forget=2)
    )
    config = _config()
    config.recovery = config.recovery.model_copy(update={"restore": True})
    strategy = _strategy(config, ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=2)

    def learned(record: ArrayRecord) -> bool:
        return any(np.any(a.numpy() != 0) for a in record.values())

    # every candidate was sent the model before unlearning while the server unlearned, the
    # deleting ones with the drop order riding on it (D_f gone before they score); the
    # relay's first query carried the unlearned one
    sent = [(kind, node) for kind, node in grid.sent if kind != P.TRAIN]
    contents = [
        c for (kind, _), (c, _) in zip(grid.sent, grid.contents, strict=True) if kind != P.TRAIN
    ]
    firsts = {node: sent.index((P.LOCAL_EVAL, node)) for node in nodes}
    assert all(kind != P.DELETION_COMPLETE for kind, _ in sent)
    for node in (101, 102):
        assert learned(contents[firsts[node]][P.ARRAYS])
        assert P.DROP_ORDER in contents[firsts[node]]
    prescore = firsts[100]
    assert P.DROP_ORDER not in contents[prescore]
    assert learned(contents[prescore][P.ARRAYS])
    relay_first = sent.index((P.LOCAL_EVAL, 100), prescore + 1)
    assert len(contents[relay_first].array_records) == 1
    assert not learned(contents[relay_first][P.ARRAYS])
    record = strategy.deletion
    assert record.relay_objective_before == pytest.approx((0.99 + 0.5 + 0.99) / 3)
    assert record.relay_hops == 0 and record.relay_stop == "standard"
    assert all(client.deleted for client in (nodes[101], nodes[102]))


@pytest.mark.parametrize(
    ("declared", "source", "start"), [(True, "validation", 1.0), (False, "clients", None)]
)
def test_the_relay_measures_the_declared_validation_set_without_the_forgotten_class(
    declared: bool, source: str, start: float | None
) -> None:
    """The zeroed model predicts class 0 everywhere: on a validation set of classes 0 and 1
    it scores 1.0 once class 1, the forgotten one, is left out (0.5 if it were not)."""
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, forget=2), c=FakeClient(2))
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    validation = ArrayDataset(np.ones((8, 1, 2, 2), dtype=np.float32), labels)
    # the model before the step answers one class everywhere, at the set's chance level: the
    # full step runs all the same, as asked
    config = _config(forget_classes=[1], untrained="unlearn")
    settings = StrategySettings.from_config(config, num_classes=2, image_shape=(1, 2, 2))
    strategy = FederatedUnlearning(
        settings,
        unlearner=ZeroingUnlearner(),
        build_model=_model,
        validation=validation if declared else None,
    )
    strategy.start(grid, _initial(), num_rounds=2)
    record = strategy.deletion
    assert record.relay_objective_source == source
    if start is not None:
        assert record.relay_objective_start == pytest.approx(start)
        assert record.relay_hops == 0 and record.relay_stop == "standard"


def _step_on(validation: ArrayDataset, untrained: str) -> tuple[FederatedUnlearning, dict]:
    """A class deletion by client 1 after round 1 of 2, with ``validation`` declared."""
    grid, nodes = _federation(a=FakeClient(0), b=FakeClient(1, forget=5), c=FakeClient(2))
    settings = StrategySettings.from_config(
        _config(untrained=untrained), num_classes=2, image_shape=(1, 2, 2)
    )
    unlearner = ZeroingUnlearner()
    unlearner.seen = []
    strategy = FederatedUnlearning(
        settings, unlearner=unlearner, build_model=_model, validation=validation
    )
    result = strategy.start(grid, _initial(), num_rounds=2)
    zeroed = all(np.all(a.numpy() == 0) for a in result.arrays.values())
    return strategy, {"grid": grid, "nodes": nodes, "seen": unlearner.seen, "zeroed": zeroed}


@pytest.mark.parametrize("untrained", ["drop", "unlearn"])
def test_a_model_that_learned_nothing_keeps_its_weights_and_its_d_f_is_dropped(
    untrained: str,
) -> None:
    """The initial model answers one class for every image: on a balanced validation set it
    sits at chance (0.5), so there is nothing to forget, unless the full step is asked for."""
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    validation = ArrayDataset(np.ones((8, 1, 2, 2), dtype=np.float32), labels)
    strategy, run = _step_on(validation, untrained)
    record = strategy.deletion
    assert record.validation_accuracy_before == record.validation_chance == 0.5
    assert run["nodes"][101].deleted and record.requests[0]["status"] == "confirmed"
    if untrained == "drop":
        assert record.skipped == "untrained" and not run["seen"] and not run["zeroed"]
        assert record.relay_stop is None and P.RELAY_TRAIN not in run["grid"].types_sent(101)
        assert P.FORGET_DATA not in run["grid"].types_sent(101)  # nothing gathered
    else:
        assert record.skipped is None and len(run["seen"]) == 1 and run["zeroed"]


def test_a_model_that_learned_its_validation_set_gets_the_full_step() -> None:
    """Labels are the model's own answers: 100 % on a set whose chance level is below 90 %."""
    x = np.random.default_rng(0).normal(size=(40, 1, 2, 2)).astype(np.float32)
    with torch.no_grad():
        labels = _model()(torch.from_numpy(x)).argmax(dim=1).numpy()
    assert np.bincount(labels).max() / len(labels) < 0.9
    strategy, run = _step_on(ArrayDataset(x, labels), "drop")
    record = strategy.deletion
    assert record.validation_accuracy_before == 1.0 and record.skipped is None
    assert len(run["seen"]) == 1 and run["zeroed"]


def test_a_class_deletions_requests_name_the_forgotten_classes() -> None:
    grid, _ = _federation(a=FakeClient(0, forget=2), b=FakeClient(1, forget=3))
    strategy = _strategy(_config(clients=2), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=1)
    requests = strategy.deletion.requests
    assert [(r["client"], r["classes"], r["samples"]) for r in requests] == [
        (0, [3], 2),
        (1, [3], 3),
    ]


def test_the_deleting_nodes_report_their_own_d_f_accuracy_per_phase() -> None:
    small, large = FakeClient(0, forget=2), FakeClient(1, forget=6, accuracy=0.5)
    large.forget_accuracy = 0.5
    grid, _ = _federation(a=small, b=large, c=FakeClient(2))
    strategy = _strategy(_config(mode="requests", forget_classes=[]), ZeroingUnlearner())
    assert strategy.settings.mode.node_side  # node-side requests: the server holds no D_f

    strategy.start(grid, _initial(), num_rounds=2)

    weighted = (2 * 1.0 + 6 * 0.5) / 8
    record = strategy.deletion
    assert record.node_forget_accuracy == {
        "before_deletion": pytest.approx(weighted),
        "after_unlearning": 0.0,
        "after_recovery": 0.0,
        "final": 0.0,
    }
    assert record.node_forget_samples == 8
    # a round followed the step: one message at the end (four models), deleting nodes only
    assert grid.types_sent().count(P.FORGET_EVAL) == 2
    at_end = [c for (kind, _), (c, _) in zip(grid.sent, grid.contents, strict=True)
              if kind == P.FORGET_EVAL]  # fmt: skip
    assert all(len(c.array_records) == 4 for c in at_end)
    assert grid.types_sent(101)[-1] == P.FORGET_EVAL  # after round 2's training
    assert grid.types_sent(102).count(P.FORGET_EVAL) == 0
    (step,) = strategy.ledger.steps  # the step's own record has them too
    assert step.node_forget_accuracy["final"] == 0.0 and step.node_forget_samples == 8


def test_a_step_after_the_last_round_is_scored_on_the_nodes_at_once() -> None:
    late = FakeClient(0, forget=2)
    late.asks_from = 2  # its user files the request in the last round
    grid, _ = _federation(a=late, b=FakeClient(1))
    strategy = _strategy(_config(clients=2, mode="requests", forget_classes=[]), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=2)
    # after the step (three models), then the final model: no round to wait for
    sent = zip(grid.sent, grid.contents, strict=True)
    sizes = [len(c.array_records) for (kind, _), (c, _) in sent if kind == P.FORGET_EVAL]
    assert sizes == [3, 1]
    assert set(strategy.deletion.node_forget_accuracy) == {
        "before_deletion", "after_unlearning", "after_recovery", "final"
    }  # fmt: skip


def test_a_node_that_cannot_score_its_d_f_is_a_fault_and_left_out() -> None:
    failing = FakeClient(1, forget=6)
    failing.fail[P.FORGET_EVAL] = "OSError: disk"
    grid, _ = _federation(a=FakeClient(0, forget=2), b=failing)
    strategy = _strategy(_config(clients=2, mode="requests", forget_classes=[]), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=1)
    assert strategy.deletion.node_forget_accuracy["before_deletion"] == 1.0
    assert strategy.deletion.node_forget_samples == 2
    assert {f["message"] for f in strategy.deletion.faults} == {P.FORGET_EVAL}


def test_simulated_modes_leave_the_d_f_measure_to_the_server() -> None:
    grid, _ = _federation(a=FakeClient(0, forget=2), b=FakeClient(1))
    strategy = _strategy(_config(clients=2), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=1)
    assert P.FORGET_EVAL not in grid.types_sent()
    assert strategy.deletion.node_forget_accuracy == {}


def test_the_deletion_step_is_told_in_flowers_log(caplog: pytest.LogCaptureFixture) -> None:
    silent = FakeClient(2, accuracy=0.5, improves=False)
    silent.fail[P.RELAY_TRAIN] = None
    grid, _ = _federation(a=FakeClient(0, forget=2), b=FakeClient(1, forget=3), c=silent)
    strategy = _strategy(_config(mode="requests", forget_classes=[]), ZeroingUnlearner())
    with caplog.at_level(logging.INFO, logger="flwr"):
        strategy.start(grid, _initial(), num_rounds=2)
    lines = [r.getMessage() for r in caplog.records if r.name == "flwr"]
    text = "\n".join(lines)
    assert "deletion: requests after round 1 from clients [0, 1] (5 samples)" in text
    assert "deletion:   client 1 (node 101): 3 samples" in text
    assert "deletion: D_f gathered, 5 samples from clients [0, 1]" in text
    assert re.search(r"deletion: unlearning \(zeroing\) done in [\d.]+ s; accuracy on the gathered "
                     r"D_f \d", text)  # fmt: skip
    assert re.search(r"relay hop 1 on clients \[0, 1, 2\] \(lr 0.05\): objective [\d.]+ -> ", text)
    assert "train.relay: node 102 skipped (no reply before the timeout)" in text
    assert "deletion: relay done after" in text
    assert (
        "the deleting nodes' own D_f accuracy (5 samples, 2 nodes): before_deletion 100.0%" in text
    )
    assert "deletion: step of round 1 done, 1 node faults so far" in text


def test_every_message_carries_the_configuration_the_strategy_acts_on() -> None:
    grid, nodes = _federation(a=FakeClient(0, forget=2), b=FakeClient(1))
    config = _config(clients=2)
    strategy = _strategy(config, ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=1)
    sent = [c for client in nodes.values() for c in client.configs]
    # with the training settings the data decides (fedforget.data.resolve_training)
    acted_on = resolve_training(config).to_json()
    assert sent and all(c[P.RUN_CONFIG_KEY] == acted_on for c in sent)
    assert all(P.BRANCH not in c for c in sent)


def test_retrain_drops_d_f_then_reruns_the_rounds_from_w0() -> None:
    grid, nodes = _federation(a=FakeClient(0, forget=3), b=FakeClient(1))
    strategy = _strategy(_config(clients=2, round=2, mode="random", forget_classes=[]))
    strategy.start(grid, _initial(), num_rounds=2)
    sent = grid.types_sent(100)
    # 2 rounds, deletion at round 1 (pending seen at once): complete, 1 rerun round, round 2
    assert sent == [P.TRAIN, P.DELETION_COMPLETE, P.TRAIN, P.TRAIN]
    assert strategy.deletion.round == 1 and nodes[100].deleted
    assert strategy.deletion.relay_hops == 0  # no relay for a retrain


# ---------------------------------------------------------------------- the relay
def _relay(
    grid: FakeGrid, max_hops: int = 3, per_hop: int = 1, candidates: int = 10
) -> tuple[RecoveryRelay, DeletionLedger]:
    ledger = DeletionLedger("class", (3,))
    messenger = NodeMessenger(0.05, 1, ledger.client_of, ledger.record_fault)
    recovery = {
        "min_accuracy": 0.9,
        "max_hops": max_hops,
        "clients_per_hop": per_hop,
        "candidates": candidates,
    }
    config = SimulationConfig(recovery=recovery).recovery
    relay = RecoveryRelay(
        config, 0.01, messenger, ledger, lambda **extra: ConfigRecord(extra), _Quiet()
    )
    return relay, ledger


class _Quiet:
    def progress(self, *args: object) -> None:
        pass


def test_the_relay_stops_at_once_when_the_clients_meet_the_bar() -> None:
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, accuracy=0.95))
    relay, _ = _relay(grid)
    arrays = _initial()
    relayed, figures = relay.run(grid, arrays)
    assert relayed is arrays
    assert grid.types_sent().count(P.RELAY_TRAIN) == 0
    assert figures["relay_hops"] == 0
    assert figures["relay_objective"] == pytest.approx(0.97)


def test_the_relay_reports_the_hops_it_tried_and_kept_not_its_limit() -> None:
    grid, _ = _federation(a=FakeClient(0, accuracy=0.1, improves=False), b=FakeClient(1))
    relay, _ = _relay(grid, max_hops=2)
    events = []
    relay.observer.progress = lambda *event: events.append(event)
    _, record = relay.run(grid, _initial())  # what the run's table shows
    phase, tried, limit, info = events[-1]
    assert (phase, tried, limit, info["kept"]) == ("recovery", 2, 2, 0)
    assert (tried, info["kept"]) == (record["relay_hops"], record["relay_hops_kept"])
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, accuracy=0.95))
    relay, _ = _relay(grid, max_hops=3)
    events.clear()
    relay.observer.progress = lambda *event: events.append(event)
    relay.run(grid, _initial())  # the clients meet the bar: no hop
    assert events[-1][1:3] == (0, 3) and events[-1][3]["kept"] == 0


def test_the_weakest_clients_train_with_the_proximal_term() -> None:
    clients = {f"c{i}": FakeClient(i, accuracy=0.5 + 0.1 * i) for i in range(4)}
    grid, nodes = _federation(**clients)
    relay, _ = _relay(grid, per_hop=2, max_hops=1)
    _, figures = relay.run(grid, _initial())
    trained = sorted(n for n in nodes if grid.types_sent(n).count(P.RELAY_TRAIN))
    assert trained == [100, 101]  # the two weakest
    config = next(c for c in nodes[100].configs if P.PROXIMAL_MU in c)
    assert float(config[P.PROXIMAL_MU]) == 1.0 and float(config[P.LEARNING_RATE]) == 0.01
    assert figures["relay_hops_kept"] == 1


def test_a_hop_that_does_not_help_is_discarded_and_the_input_returned() -> None:
    grid, _ = _federation(a=FakeClient(0, accuracy=0.1, improves=False), b=FakeClient(1))
    relay, _ = _relay(grid, max_hops=2)
    arrays = _initial()
    relayed, record = relay.run(grid, arrays)
    assert relayed is arrays
    assert grid.types_sent(100).count(P.RELAY_TRAIN) == 2
    assert (record["relay_hops"], record["relay_hops_kept"]) == (2, 0)
    start = record["relay_objective_start"]
    assert record["relay_objective"] == start == pytest.approx(0.545)
    lrs = [float(c[P.LEARNING_RATE]) for c in grid.handlers[100].configs if P.LEARNING_RATE in c]
    assert lrs == [0.01, 0.005]  # halved after the rejected hop
    trace = record["relay_trace"]
    assert [(hop["clients"], hop["kept"], hop["p_value"]) for hop in trace] == [
        ([0], False, None)
    ] * 2
    assert [hop["lr"] for hop in trace] == lrs


def test_a_failing_client_is_recorded_and_the_others_carry_the_hop() -> None:
    weakest, next_weakest = FakeClient(0, accuracy=0.2), FakeClient(1, accuracy=0.5)
    weakest.fail[P.RELAY_TRAIN] = "RuntimeError: out of memory"
    grid, _ = _federation(a=weakest, b=next_weakest, c=FakeClient(2))
    relay, ledger = _relay(grid, per_hop=2, max_hops=1)
    _, figures = relay.run(grid, _initial())
    assert grid.types_sent(101).count(P.RELAY_TRAIN) == 1
    (fault,) = ledger.faults
    assert fault["message"] == P.RELAY_TRAIN and fault["error"] == "RuntimeError: out of memory"
    # the failed node is not asked again before the next FedAvg round
    assert grid.types_sent(100).count(P.LOCAL_EVAL) == 1
    assert figures["relay_hops_kept"] == 1


def test_the_relay_asks_a_bounded_number_of_clients() -> None:
    clients = {f"c{i}": FakeClient(i, accuracy=0.3, improves=False) for i in range(30)}
    grid, _ = _federation(**clients)
    relay, _ = _relay(grid, max_hops=3, candidates=5, per_hop=2)
    _, figures = relay.run(grid, _initial())
    assert grid.types_sent().count(P.LOCAL_EVAL) == 5 * (1 + 3)  # start + one per hop
    assert grid.types_sent().count(P.RELAY_TRAIN) == 2 * 3
    assert figures["relay_client_calls"] == 5 * 4 + 2 * 3


# ---------------------------------------------------------------------- faults
def test_failed_and_silent_nodes_are_recorded_and_skipped_until_the_next_round() -> None:
    broken, silent = FakeClient(0), FakeClient(1)
    broken.fail[P.LOCAL_EVAL] = "ValueError: bad data"
    silent.fail[P.LOCAL_EVAL] = None
    grid, _ = _federation(a=broken, b=silent, c=FakeClient(2))
    ledger = DeletionLedger("class", (3,))
    ledger.partition_of.update({100: 0, 101: 1})
    messenger = NodeMessenger(0.05, 3, ledger.client_of, ledger.record_fault)
    record = RecordDict({P.CONFIG: ConfigRecord()})

    replies = messenger.query(grid, messenger.active_nodes(grid), P.LOCAL_EVAL, record)

    assert [r.metadata.src_node_id for r in replies] == [102]
    errors = {f["client"]: f["error"] for f in ledger.faults}
    assert errors == {0: "ValueError: bad data", 1: "no reply before the timeout"}
    assert messenger.active_nodes(grid) == [102]
    messenger.new_round()
    assert messenger.active_nodes(grid) == [100, 101, 102]
    with pytest.raises(RuntimeError, match="1 of 1 clients did not answer"):
        messenger.query(grid, [100], P.LOCAL_EVAL, record, strict=True)


def test_a_round_where_every_client_fails_stops_with_their_reasons() -> None:
    clients = [FakeClient(0), FakeClient(1)]
    for client in clients:
        client.fail[P.TRAIN] = "RuntimeError: CUDA error"
    grid, _ = _federation(a=clients[0], b=clients[1])
    with pytest.raises(RuntimeError, match=r"round 1: every client failed .*CUDA error"):
        _strategy(_config(clients=2), ZeroingUnlearner()).start(grid, _initial(), num_rounds=1)


def test_a_client_that_fails_to_send_d_f_keeps_its_data() -> None:
    sender, failing = FakeClient(0, forget=2), FakeClient(1, forget=3)
    failing.fail[P.FORGET_DATA] = "OSError: disk"
    failing.attaches = False  # its D_f must be fetched with query.forget_data
    grid, nodes = _federation(a=sender, b=failing)
    strategy = _strategy(_config(clients=2), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=1)
    assert strategy.deletion.need_figure("forget", "samples_received") == 2
    assert nodes[100].deleted and not nodes[101].deleted  # only who sent D_f dropped it
    assert [f["client"] for f in strategy.deletion.faults] == [1]


# ---------------------------------------------------------------------- take over, settings
def test_a_branch_takes_over_the_federation_state_without_sharing_it() -> None:
    grid, _ = _federation(a=FakeClient(0, forget=4), b=FakeClient(1))
    config = _config(clients=2, round=1)
    base = _strategy(config)
    base.begin(_initial())
    base.run_rounds(grid, _initial(), 1, "federated", handle_deletions=False)
    branch = _strategy(config, ZeroingUnlearner())
    branch.take_over(base)
    assert branch.pending_deletions == base.pending_deletions == {100: 4}
    assert branch.initial_arrays is base.initial_arrays
    branch.carry_out_deletion(grid, 1, _initial())
    assert branch.pending_deletions == {} and base.pending_deletions == {100: 4}
    assert branch.deletion.clients == [0] and base.deletion.round is None


def test_settings_follow_the_configuration_the_clients_receive() -> None:
    config = _config()
    settings = StrategySettings.from_config(config, num_classes=10, branch="lau")
    assert (settings.mode, settings.forget_classes, settings.timeout) == ("class", (3,), 1.0)
    sent = resolve_training(config).to_json()  # with the training settings the data decides
    assert settings.message_config() == {P.RUN_CONFIG_KEY: sent, P.BRANCH: "lau"}
    gan = config.model_copy(update={"task": "gan"})
    assert StrategySettings.from_config(gan, num_classes=10).local_lr == gan.gan.lr


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        ({"mode": "backdoor"}, "strategy mode 'backdoor' disagrees"),
        ({"forget_classes": [1]}, r"forget classes \[1\] disagree"),
    ],
)
def test_a_strategy_that_expects_another_deletion_than_its_clients_is_refused(
    expected: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        StrategySettings.from_config(_config(), num_classes=10, **expected)
    agreed = StrategySettings.from_config(
        _config(), num_classes=10, mode="class", forget_classes=[3]
    )
    assert agreed.mode == "class"


def test_the_ledger_assembles_the_record_from_the_parts_figures() -> None:
    ledger = DeletionLedger("requests", ())
    assert ledger.record.round is None and ledger.record.mode == "requests"
    ledger.partition_of[9] = 1
    ledger.pending[9] = 7
    ledger.filed[9] = (["r1"], [4, 2])
    assert ledger.open_deletion(2) == [9]
    ledger.record_fault({"node": 9})
    figures = StepFigures(
        unlearning_seconds=1.5,
        recovery_seconds=0.5,
        relay={"relay_hops": 3},
        needs={"forget": {"samples_received": 7}},
        extra_bytes_from_clients=100,
    )
    traffic = Traffic(bytes_to_clients=10, bytes_from_clients=20, round_trips=4)
    record = ledger.close_deletion(figures, traffic)
    assert isinstance(record, DeletionSummary) and ledger.record is record
    assert (record.round, record.clients, record.nodes, record.forget_samples) == (2, [1], [9], 7)
    assert record.forget_classes == [2, 4] and record.faults == [{"node": 9}]
    assert (record.relay_hops, record.wall_seconds, record.bytes_from_clients) == (3, 2.0, 120)
    assert record.need_figure("forget", "samples_received") == 7
    assert record.round_trips == 4
    assert ledger.steps == [record]


def test_a_round_trip_is_one_wait_however_many_nodes_it_reaches() -> None:
    traffic = Traffic()
    messages = [Message(RecordDict(), dst_node_id=n, message_type=P.LOCAL_EVAL) for n in (100, 101)]
    traffic.count(messages, [], 0.1)
    traffic.count([], [], 0.0)  # nothing sent: no wait
    assert (traffic.round_trips, traffic.messages) == (1, 2)


def test_compare_branches_wait_for_replies_as_long_as_the_configuration_says() -> None:
    from fedforget.report import RunObserver
    from fedforget.simulations.compare import ClassifierBranches
    from fedforget.simulations.gan import GanBranches

    config = _config(clients=2).model_copy(update={"message_timeout": 12.5})
    branch = ClassifierBranches(config).strategy("distill", "distill", RunObserver())
    assert branch.messenger.timeout == 12.5
    assert branch.settings.message_config()[P.BRANCH] == "distill"
    assert json.loads(branch.settings.message_config()[P.RUN_CONFIG_KEY])["strategy"] == "distill"
    gan_config = config.model_copy(update={"task": "gan"})
    assert (
        GanBranches(gan_config).strategy("retrain", None, RunObserver()).messenger.timeout == 12.5
    )


class AdjustingUnlearner(ZeroingUnlearner):
    """Zeroes the model, then adds 1 to every FedAvg aggregate after the deletion."""

    name = "adjusting"
    uses_relay = False

    def __init__(self) -> None:
        super().__init__()
        self.adjusted: list[float] = []

    def adjust_update(self, before, aggregated):
        self.adjusted.append(float(sum(np.abs(v).sum() for v in before.values())))
        return {k: v + 1 for k, v in aggregated.items()}


def test_rounds_after_the_deletion_pass_through_the_unlearners_adjustment() -> None:
    """FedOSD's non-reverting projection hooks in here: after the deletion, not before."""
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, forget=2))
    unlearner = AdjustingUnlearner()
    strategy = _strategy(_config(clients=2), unlearner)
    result = strategy.start(grid, _initial(), num_rounds=3)
    # deletion after round 1; rounds 2 and 3 adjusted, each from the previous global model
    assert unlearner.adjusts_updates and not ZeroingUnlearner().adjusts_updates
    assert unlearner.adjusted[0] == 0.0  # round 2 started from the zeroed model
    assert len(unlearner.adjusted) == 2
    assert all(np.all(a.numpy() == 2) for a in result.arrays.values())


# ---------------------------------------------------------------------- the deletion's cost
class SilentUnlearner(Unlearner):
    """Needs nothing from the clients and returns the model as it is (no relay)."""

    name = "silent"
    needs = frozenset()

    def unlearn(self, model, request: UnlearningRequest, context: UnlearningContext):
        return model


MODEL_BYTES = (4 * 2 + 2) * 4  # Linear(4, 2): weight and bias in float32


def _step_cost(strategy: FederatedUnlearning, grid: FakeGrid) -> list[tuple]:
    """Train one round (the request arrives), carry the deletion out; the step's messages."""
    strategy.begin(_initial())
    arrays = strategy.run_rounds(grid, _initial(), 1, "federated", handle_deletions=False).arrays
    first = len(grid.contents)
    strategy.carry_out_deletion(grid, 1, arrays)
    return grid.contents[first:]


def _config_bytes(content: RecordDict) -> int:
    return payload_bytes(RecordDict({P.CONFIG: content[P.CONFIG]})) if P.CONFIG in content else 0


def test_payload_bytes_count_the_arrays_values_and_the_entries() -> None:
    arrays = ArrayRecord(_model().state_dict())
    assert payload_bytes(RecordDict({P.ARRAYS: arrays})) == MODEL_BYTES
    config = ConfigRecord({"ab": "xyz", "n": 3, "flag": True})
    metrics = MetricRecord({"loss": 0.5})
    assert payload_bytes(RecordDict({P.CONFIG: config})) == (2 + 3) + (1 + 8) + (4 + 1)
    assert payload_bytes(RecordDict({P.ARRAYS: arrays, P.METRICS: metrics})) == MODEL_BYTES + 12


def test_a_method_that_sends_no_model_pays_only_the_deletion_notice() -> None:
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, forget=5))
    strategy = _strategy(_config(clients=2), SilentUnlearner())
    step = _step_cost(strategy, grid)
    record = strategy.deletion
    # one message: the requesting client drops D_f; no arrays either way
    assert [P.ARRAYS in content for content, _ in step] == [False]
    assert record.bytes_to_clients == _config_bytes(step[0][0]) > 0
    assert record.bytes_from_clients == len(P.NUM_FORGET) + 8  # its one metric
    assert record.client_compute_seconds == 0.0
    assert 0.0 <= record.server_seconds <= record.wall_seconds
    assert record.round_trips == 1  # the drop order, waited for once


@pytest.mark.parametrize("unlearner", [SilentUnlearner(), ZeroingUnlearner()])
def test_with_a_round_to_follow_the_drop_order_rides_on_the_next_message(
    unlearner: Unlearner,
) -> None:
    grid, nodes = _federation(a=FakeClient(0), b=FakeClient(1, forget=5, accuracy=0.5))
    strategy = _strategy(_config(clients=2), unlearner)  # (node-side requests: forget_eval's)
    strategy.start(grid, _initial(), num_rounds=2)
    record = strategy.deletion
    relays = unlearner.uses_relay
    # no message of its own: without a relay the step waited for nothing, with one only for
    # the relay's (the order rode on its evaluation)
    assert P.DELETION_COMPLETE not in grid.types_sent()
    assert record.round_trips == (record.relay_hops * 2 + 1 if relays else 0)
    carriers = [
        (kind, node) for (kind, node), (c, _) in zip(grid.sent, grid.contents, strict=True)
        if P.DROP_ORDER in c
    ]  # fmt: skip
    assert carriers == [(P.LOCAL_EVAL if relays else P.TRAIN, 101)]
    assert nodes[101].deleted and record.requests[0]["status"] == "confirmed"
    assert strategy.bookkeeping.deleted_passes_after == 0  # round 2 trained without D_f
    # the order's metric is taken out of the reply: round 2's metrics aggregate as usual
    assert strategy.messenger.orders == {}


def test_leaving_clients_are_sent_the_drop_order_on_its_own() -> None:
    grid, nodes = _federation(a=FakeClient(0), b=FakeClient(1, forget=5), c=FakeClient(2))
    config = _config(mode="client", forget_classes=[], deleting_clients=[1])
    strategy = _strategy(config, SilentUnlearner())
    strategy.start(grid, _initial(), num_rounds=2)
    assert grid.types_sent(101) == [P.TRAIN, P.DELETION_COMPLETE]  # then it left
    assert not any(P.DROP_ORDER in content for content, _ in grid.contents)
    assert nodes[101].deleted and strategy.deletion.round_trips == 1


def test_an_order_rides_only_on_the_message_to_its_node() -> None:
    grid, nodes = _federation(a=FakeClient(0), b=FakeClient(1))
    strategy = _strategy(_config(clients=2))
    order = ConfigRecord({P.REQUESTS: "{}"})
    strategy.messenger.carry_order([101], order)
    record = RecordDict({P.CONFIG: ConfigRecord({P.SERVER_ROUND: 1})})
    strategy.messenger.query(grid, [100, 101], P.LOCAL_EVAL, record)
    (to_100, _), (to_101, _) = grid.contents
    assert P.DROP_ORDER not in to_100 and P.DROP_ORDER not in record
    assert to_101[P.DROP_ORDER] is order and to_101[P.CONFIG] is record[P.CONFIG]
    assert nodes[101].orders == 1 and strategy.messenger.orders == {}  # done: not sent again


def test_the_deletion_step_meters_the_models_and_data_it_moves() -> None:
    grid, _ = _federation(a=FakeClient(0), b=FakeClient(1, forget=5, accuracy=0.5), c=FakeClient(2))
    strategy = _strategy(_config(), ZeroingUnlearner())  # D_f to the server, then the relay
    step = _step_cost(strategy, grid)
    record = strategy.deletion
    with_model = sum(P.ARRAYS in content for content, _ in step)
    assert with_model >= 4  # the relay's evaluations and its hop carry the model
    configs = sum(_config_bytes(content) for content, _ in step)
    assert record.bytes_to_clients == with_model * MODEL_BYTES + configs
    forget = 5 * (1 * 2 * 2 * 4) + 5 * 8  # D_f's images (float32) and labels (int64)
    replies = [reply for _, reply in step if reply is not None]
    models_back = sum(P.ARRAYS in reply for reply in replies)  # the relay's training
    metrics = sum(payload_bytes(RecordDict({P.METRICS: r[P.METRICS]})) for r in replies)
    assert record.bytes_from_clients == forget + models_back * MODEL_BYTES + metrics
    assert record.client_compute_seconds == pytest.approx(0.5 * models_back)


def test_retrains_cost_is_the_rounds_it_reruns() -> None:
    grid, _ = _federation(a=FakeClient(0, forget=3), b=FakeClient(1))
    strategy = _strategy(_config(clients=2, mode="random", forget_classes=[]))
    step = _step_cost(strategy, grid)
    trained = [reply for content, reply in step if reply is not None and P.ARRAYS in reply]
    assert len(trained) == 2  # one rerun round of two clients
    assert strategy.deletion.bytes_from_clients >= 2 * MODEL_BYTES
    assert strategy.deletion.client_compute_seconds == pytest.approx(2 * 0.5)


# ---------------------------------------------------------------------- sequential deletions
def test_each_sequential_deletion_step_is_recorded_on_its_own() -> None:
    later = FakeClient(2, forget=3)
    later.asks_from = 2
    grid, nodes = _federation(a=FakeClient(0), b=FakeClient(1, forget=5), c=later)
    strategy = _strategy(_config(round=[1, 2], mode="random", forget_classes=[]))
    strategy.start(grid, _initial(), num_rounds=3)
    steps = strategy.ledger.steps
    assert [(s.round, s.clients, s.forget_samples) for s in steps] == [(1, [1], 5), (2, [2], 3)]
    assert nodes[101].deleted and nodes[102].deleted
    # retrain's second step reran both rounds from w0: its cost is not the first step's
    assert steps[1].bytes_from_clients > steps[0].bytes_from_clients
    # the record is the latest step; the summaries keep each step apart
    assert strategy.deletion.round == 2
    assert [len(s.requests) for s in steps] == [1, 1]
    assert len(strategy.deletion.requests) == 2  # the latest record lists every step's
