"""A real node scores the models it is sent on its own data (``query.forget_eval``, the relay).

The ClientApp's handlers run in-process on a node directory: the user files a class deletion,
the server's ``query.deletion_complete`` carries it out, and ``query.forget_eval`` must return
the accuracy of each model on exactly the deleted samples, and nothing else. A training
reply depends on the message alone, not on what the handler's process served before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedforget import protocol as P
from fedforget.clients import app as client_app
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset, load_dataset
from fedforget.models import build_model
from fedforget.node import file_request, write_node_data
from fedforget.training import accuracy, train_local


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds a Message only inside a task; pretend to be one."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _message(kind: str, config: SimulationConfig, **models: ArrayRecord) -> Message:
    entries = {P.RUN_CONFIG_KEY: config.to_json(), P.SERVER_ROUND: 1, P.NUM_CLASSES: 10}
    content = RecordDict({**models, P.CONFIG: ConfigRecord(entries)})
    return Message(content, dst_node_id=1, message_type=kind)


def _node(tmp_path: Path, samples: int) -> tuple[ArrayDataset, SimulationConfig, Context]:
    """A node directory holding the first ``samples`` digits, a requests-mode run, its Context."""
    node_data = load_dataset("digits").train.subset(np.arange(samples))
    write_node_data(tmp_path / "node", node_data)
    config = SimulationConfig(
        clients=2, data={"dataset": "digits"}, deletion={"mode": "requests"}, train={"rounds": 2}
    )
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"node-dir": str(tmp_path / "node"), "partition-id": 0},
        state=RecordDict(),
        run_config={},
    )
    return node_data, config, context


def test_a_node_scores_each_model_on_its_deleted_samples_only(tmp_path: Path) -> None:
    torch.manual_seed(0)
    node_data, config, context = _node(tmp_path, 400)
    file_request(tmp_path / "node", classes=[3])
    untrained = build_model("lenet5", 10, 1, 8)
    learned = build_model("lenet5", 10, 1, 8)
    train_local(learned, node_data, epochs=20, lr=0.05, momentum=0.9, batch_size=16, seed=0)

    before = client_app.forget_eval(
        _message(P.FORGET_EVAL, config, learned=ArrayRecord(learned.state_dict())), context
    )
    assert int(before.content[P.METRICS][P.NUM_EXAMPLES]) == 0  # nothing deleted yet
    client_app.deletion_complete(_message(P.DELETION_COMPLETE, config), context)
    reply = client_app.forget_eval(
        _message(
            P.FORGET_EVAL,
            config,
            learned=ArrayRecord(learned.state_dict()),
            untrained=ArrayRecord(untrained.state_dict()),
        ),
        context,
    )

    threes = node_data.subset(np.flatnonzero(node_data.y == 3))
    metrics = reply.content[P.METRICS]
    assert int(metrics[P.NUM_EXAMPLES]) == len(threes) > 0
    assert float(metrics[f"{P.ACCURACY}:learned"]) == pytest.approx(accuracy(learned, threes))
    assert float(metrics[f"{P.ACCURACY}:untrained"]) == pytest.approx(accuracy(untrained, threes))
    assert float(metrics[f"{P.ACCURACY}:learned"]) > 0.5  # a model that learned the 3s
    assert list(reply.content.array_records) == []  # numbers travel, not data or weights


def test_a_relay_evaluation_scores_every_model_it_carries(tmp_path: Path) -> None:
    """``query.local_eval`` with the models before and after unlearning: one reply, both scores."""
    torch.manual_seed(0)
    node_data, config, context = _node(tmp_path, 300)
    untrained = build_model("lenet5", 10, 1, 8)
    learned = build_model("lenet5", 10, 1, 8)
    train_local(learned, node_data, epochs=10, lr=0.05, momentum=0.9, batch_size=16, seed=0)
    models = {P.ARRAYS: ArrayRecord(untrained.state_dict())}
    models[P.extra_model(1)] = ArrayRecord(learned.state_dict())
    reply = client_app.local_eval(_message(P.LOCAL_EVAL, config, **models), context)

    metrics = reply.content[P.METRICS]
    assert int(metrics[P.NUM_EXAMPLES]) == len(node_data)
    assert float(metrics[P.ACCURACY]) == pytest.approx(accuracy(untrained, node_data))
    learned_score = float(metrics[P.extra_model(1, P.ACCURACY)])
    assert learned_score == pytest.approx(accuracy(learned, node_data)) and learned_score > 0.8


def test_a_relay_hop_trains_on_at_most_its_sample_limit(tmp_path: Path) -> None:
    """``train.relay`` with ``max-samples``: a seeded subset, the same for the same seed."""
    _, config, context = _node(tmp_path, 300)
    model = ArrayRecord(build_model("lenet5", 10, 1, 8).state_dict())

    def hop(limit: int | None) -> Message:
        message = _message(P.RELAY_TRAIN, config, **{P.ARRAYS: model})
        told = {P.EPOCHS: 1, P.LEARNING_RATE: 0.05, P.PROXIMAL_MU: 1.0, P.SEED: 3}
        if limit is not None:
            told[P.MAX_SAMPLES] = limit
        for key, value in told.items():
            message.content[P.CONFIG][key] = value
        return client_app.relay_train(message, context)

    assert int(hop(None).content[P.METRICS][P.NUM_EXAMPLES]) == 300
    first, again = hop(100), hop(100)
    assert int(first.content[P.METRICS][P.NUM_EXAMPLES]) == 100
    weights, repeated = (m.content[P.ARRAYS].to_numpy_ndarrays() for m in (first, again))
    assert all(np.array_equal(a, b) for a, b in zip(weights, repeated, strict=True))


def test_a_training_reply_does_not_depend_on_what_the_actor_served_before(tmp_path: Path) -> None:
    """Plain training refills one model per process: it must start from the received weights
    alone, whatever an earlier message (another node's, other weights) left in it."""
    _, config, context = _node(tmp_path, 200)
    torch.manual_seed(0)
    received, other = (build_model("lenet5", 10, 1, 8).state_dict() for _ in range(2))

    def trained(state: dict) -> list[np.ndarray]:
        message = _message(P.TRAIN, config, **{P.ARRAYS: ArrayRecord(state)})
        return client_app.train(message, context).content[P.ARRAYS].to_numpy_ndarrays()

    client_app._process_model.cache_clear()
    fresh = trained(received)  # on a model built for this message
    trained(other)
    reused = trained(received)  # on the model the two messages before trained
    assert all(np.array_equal(a, b) for a, b in zip(fresh, reused, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(fresh, trained(other), strict=True))
