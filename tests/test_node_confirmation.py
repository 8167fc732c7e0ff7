"""A deletion is listed as done only when the node confirmed it.

The server may unlearn a request whose node then vanishes (D_f came with the training reply),
but only the node's reply to the message that carried the drop order (riding on its next
message, or a ``query.deletion_complete`` of its own after the last round) says the node
recorded the deletion. A request without that reply stays ``pending`` in the run summary,
with the fault; the node still holds it, and carries it out when the order reaches it (the
order rides on its next message) or when it reports it again.

The federation is a fake Grid (:mod:`test_strategy_parts`) whose nodes are either scripted
clients or real node directories served by the ClientApp's own handlers, in this process.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict
from test_strategy_parts import (  # the fake Grid and scripted clients of the strategy tests
    FakeClient,
    FakeGrid,
    ZeroingUnlearner,
    _config,
    _federation,
    _initial,
    _server_identity,  # noqa: F401 - the autouse fixture stamping the messages
    _strategy,
)

from fedforget import protocol as P
from fedforget.clients import app as client_app
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset
from fedforget.models import build_model
from fedforget.node import LEDGER_FILE, REQUESTS_DIR, RequestError, file_request, write_node_data
from fedforget.strategies import FederatedUnlearning, StrategySettings
from fedforget.strategies.ledger import CONFIRMED, PENDING

ROWS = 40


def _statuses(strategy) -> list[tuple[int, int, str]]:
    return [(r["round"], r["client"], r["status"]) for r in strategy.deletion.requests]


class SilentAtOrder(FakeClient):
    """A scripted client killed when a drop order reaches it (no reply), once or always:
    riding on a message, or a ``query.deletion_complete`` of its own."""

    def __init__(self, partition: int, forget: int, returns: bool = True) -> None:
        super().__init__(partition, forget=forget)
        self.returns = returns
        self.silenced = 0

    def __call__(self, message: Message):
        ordered = P.DROP_ORDER in message.content
        ordered |= message.metadata.message_type == P.DELETION_COMPLETE
        if ordered and (self.silenced == 0 or not self.returns):
            self.silenced += 1
            return None
        return super().__call__(message)


def test_an_unconfirmed_request_is_pending_until_the_node_confirms_it() -> None:
    vanishing = SilentAtOrder(1, forget=3)
    grid, _ = _federation(a=FakeClient(0), b=vanishing, c=FakeClient(2))
    unlearner = ZeroingUnlearner()
    unlearner.seen = []
    strategy = _strategy(_config(mode="requests", forget_classes=[]), unlearner)

    strategy.start(grid, _initial(), num_rounds=3)

    # round 1: D_f came with the request and the server unlearned; the order rode on the
    # node's next message (the relay's query), which it never answered; it rode again on
    # round 2's training, and the node carried it out then
    assert len(unlearner.seen) == 1 and len(unlearner.seen[0].forget) == 3
    assert vanishing.silenced == 1 and vanishing.deleted and vanishing.orders == 1
    assert _statuses(strategy) == [(1, 1, CONFIRMED)]
    assert [f["node"] for f in strategy.ledger.faults] == [101]
    assert strategy.ledger.steps[0].requests[0]["status"] == CONFIRMED


def test_a_node_that_never_comes_back_leaves_its_request_pending() -> None:
    gone = SilentAtOrder(1, forget=3, returns=False)
    grid, _ = _federation(a=FakeClient(0), b=gone)
    strategy = _strategy(_config(clients=2, mode="requests", forget_classes=[]), ZeroingUnlearner())
    strategy.start(grid, _initial(), num_rounds=2)
    assert _statuses(strategy) == [(1, 1, PENDING)]
    summary = json.loads(strategy.deletion.model_dump_json())
    (request,) = summary["requests"]
    assert request["fault"]["node"] == 101 and gone.silenced >= 1 and not gone.deleted


def test_after_the_last_round_the_order_goes_alone_and_an_unanswered_one_stays_pending() -> None:
    for answers, status in ((False, PENDING), (True, CONFIRMED)):
        node = FakeClient(1, forget=3) if answers else SilentAtOrder(1, forget=3, returns=False)
        grid, _ = _federation(a=FakeClient(0), b=node)
        config = _config(clients=2, mode="requests", forget_classes=[])
        strategy = _strategy(config, ZeroingUnlearner())
        strategy.start(grid, _initial(), num_rounds=1)  # no round follows: nothing to ride on
        assert grid.types_sent(101).count(P.DELETION_COMPLETE) == 1
        assert not any(P.DROP_ORDER in content for content, _ in grid.contents)
        assert _statuses(strategy) == [(1, 1, status)]


# ---------------------------------------------------------------------- real node directories
class RealNode:
    """A node directory served by the ClientApp's handlers; ``silent`` types get no reply once."""

    def __init__(self, node_dir: Path, partition: int) -> None:
        self.context = Context(
            run_id=1,
            node_id=100 + partition,
            node_config={"node-dir": str(node_dir), "partition-id": partition},
            state=RecordDict(),
            run_config={},
        )
        self.silent: set[str] = set()
        self.silent_at_order = False  # no reply to the first message carrying a drop order

    def __call__(self, message: Message) -> RecordDict | str | None:
        kind = message.metadata.message_type
        if kind in self.silent:
            self.silent.discard(kind)
            return None
        if self.silent_at_order and P.DROP_ORDER in message.content:
            self.silent_at_order = False
            return None
        try:
            return client_app.app(message, self.context).content
        except Exception as err:  # what Flower sends the server: the error, one line
            return f"{type(err).__name__}: {err}"


def _node_dirs(root: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    dirs = []
    for index in range(count):
        data = ArrayDataset(
            x=rng.random((ROWS, 1, 8, 8), dtype=np.float32),
            y=np.arange(ROWS, dtype=np.int64) % 10,
        )
        dirs.append(root / f"node{index}")
        write_node_data(dirs[-1], data)
    return dirs


def _real_strategy(unlearner) -> FederatedUnlearning:
    config = SimulationConfig(
        clients=2,
        data={"dataset": "digits"},
        train={"rounds": 2, "local_epochs": 1},
        deletion={"mode": "requests"},
        recovery={"enabled": False},
        message_timeout=1.0,
    )
    settings = StrategySettings.from_config(config, num_classes=10, image_shape=(1, 8, 8))
    return FederatedUnlearning(
        settings, unlearner=unlearner, build_model=lambda: build_model("lenet5", 10, 1, 8)
    )


def _lenet() -> ArrayRecord:
    return ArrayRecord(build_model("lenet5", 10, 1, 8).state_dict())


def test_a_real_node_killed_during_the_step_carries_its_request_out_when_back(tmp_path) -> None:
    dirs = _node_dirs(tmp_path, 2)
    request, path, _ = file_request(dirs[0], samples=[4, 9])
    nodes = [RealNode(folder, i) for i, folder in enumerate(dirs)]
    nodes[0].silent_at_order = True
    grid = FakeGrid({100 + i: node for i, node in enumerate(nodes)})
    unlearner = ZeroingUnlearner()
    unlearner.seen = []

    strategy = _real_strategy(unlearner)
    strategy.start(grid, _lenet(), num_rounds=3)

    assert P.FORGET_DATA not in grid.types_sent(100)  # D_f came with the training reply
    assert [len(r.forget) for r in unlearner.seen] == [2]  # unlearned once, in round 1
    (first,) = strategy.deletion.requests
    assert (first["requests"], first["status"]) == ([request.id], CONFIRMED)
    assert [f["node"] for f in strategy.ledger.faults] == [100]  # killed when it came
    # the order rode on its next message again: carried out before it was handled
    (entry,) = json.loads((dirs[0] / LEDGER_FILE).read_text())["carried_out"]
    assert (entry["id"], entry["round"]) == (request.id, 1)  # the step's round, recorded once
    assert not path.exists()


def test_a_node_refusing_to_train_is_a_fault_naming_it_and_the_reason(tmp_path) -> None:
    dirs = _node_dirs(tmp_path, 2)
    file_request(dirs[1], samples=[1])
    nodes = [RealNode(folder, i) for i, folder in enumerate(dirs)]
    grid = FakeGrid({100 + i: node for i, node in enumerate(nodes)})
    strategy = _real_strategy(ZeroingUnlearner())
    strategy.start(grid, _lenet(), num_rounds=1)  # node 1 carries its request out
    (dirs[1] / LEDGER_FILE).unlink()  # then its ledger is lost

    strategy.start(grid, _lenet(), num_rounds=1)

    trained = [f for f in strategy.deletion.faults if f["message"] == P.TRAIN]
    assert [(f["node"], f["client"]) for f in trained] == [(101, 1)]
    assert "RequestError" in trained[0]["error"] and LEDGER_FILE in trained[0]["error"]


def test_a_node_never_confirms_a_request_it_does_not_hold(tmp_path) -> None:
    (folder,) = _node_dirs(tmp_path, 1)
    node = RealNode(folder, 0)
    config = _real_strategy(ZeroingUnlearner()).settings.message_config()
    entries = {**config, P.SERVER_ROUND: 1, P.NUM_CLASSES: 10}
    entries[P.REQUESTS] = json.dumps({"100": ["r-000000000000"]})
    message = Message(
        RecordDict({P.CONFIG: ConfigRecord(entries)}),
        dst_node_id=100,
        message_type=P.DELETION_COMPLETE,
    )
    with pytest.raises(RequestError, match="neither pending nor carried out"):
        client_app.deletion_complete(message, node.context)
    assert not (folder / LEDGER_FILE).exists() and not (folder / REQUESTS_DIR).exists()
