"""A node decides itself what it imports and where it reads and writes, not the run config."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedforget import protocol as P
from fedforget.clients import app as client_app
from fedforget.clients.policy import PLUGINS_ENV, ROOTS_ENV, NodePolicy, NodeRefusalError
from fedforget.config import SimulationConfig

HOSTILE = "fedforget_hostile_plugin"


@pytest.fixture
def hostile_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An importable module that leaves a mark when imported; returns the mark's path."""
    mark = tmp_path / "imported"
    (tmp_path / f"{HOSTILE}.py").write_text(f"open({str(mark)!r}, 'w').write('ran')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(PLUGINS_ENV, raising=False)
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    sys.modules.pop(HOSTILE, None)
    return mark


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds a Message only inside a task; pretend to be one."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


def _message(config: SimulationConfig) -> Message:
    record = ConfigRecord({P.RUN_CONFIG_KEY: config.to_json(), P.SERVER_ROUND: 1})
    return Message(RecordDict({P.CONFIG: record}), dst_node_id=1, message_type="train")


def _context(**node_config: str | int) -> Context:
    return Context(
        run_id=1, node_id=1, node_config=dict(node_config), state=RecordDict(), run_config={}
    )


def _digits(**values: object) -> SimulationConfig:
    base: dict = {"clients": 2, "data": {"dataset": "digits"}, "train": {"rounds": 2}}
    return SimulationConfig(**{**base, "deletion": {"round": 1}, **values})


def test_a_plugin_the_node_did_not_allow_is_refused_and_never_imported(hostile_module) -> None:
    message = _message(_digits(plugins=[HOSTILE]))
    with pytest.raises(NodeRefusalError, match=f"does not import '{HOSTILE}'"):
        client_app.train(message, _context(**{"partition-id": 0}))
    assert not hostile_module.exists() and HOSTILE not in sys.modules


def test_a_plugin_in_the_nodes_own_config_is_imported(hostile_module) -> None:
    config = _digits(plugins=[HOSTILE])
    client_app._config(_message(config), _context(plugins=f"other, {HOSTILE}"))
    assert hostile_module.read_text() == "ran"


def test_a_data_folder_the_node_did_not_allow_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ROOTS_ENV, raising=False)
    elsewhere = tmp_path / "server-chosen"
    for data in ({"dataset": "npz", "path": str(elsewhere)}, {"data_dir": str(elsewhere)}):
        message = _message(_digits(data={"dataset": "digits", **data}))
        with pytest.raises(NodeRefusalError, match="outside the folders it allows"):
            client_app.train(message, _context(**{"partition-id": 0}))
    assert not elsewhere.exists()


def test_paths_under_an_allowed_folder_pass(tmp_path: Path) -> None:
    policy = NodePolicy.from_node({"data-dir": str(tmp_path / "data")}, environ={})
    assert policy.allows_path(tmp_path / "data" / "mnist.npz")
    assert not policy.allows_path(tmp_path / "data" / ".." / "secrets")
    assert not policy.allows_path(tmp_path / "data-other")
    env = {ROOTS_ENV: str(tmp_path / "run"), PLUGINS_ENV: "my_models"}
    policy = NodePolicy.from_node({}, environ=env)
    assert policy.allows_path(tmp_path / "run" / "verification")
    assert policy.allows_module("my_models") and policy.allows_module("fedforget.models")
    assert not policy.allows_module("os") and not policy.allows_module("fedforgetx")


def test_a_real_node_writes_verification_only_under_its_own_folder(tmp_path: Path) -> None:
    node_dir = tmp_path / "node"
    node_dir.mkdir()
    policy = NodePolicy.from_node({"node-dir": str(node_dir)}, environ={})
    folder = policy.verification_folder(str(tmp_path / "anywhere"), 7, "client-0")
    assert folder == node_dir.resolve() / "verification" / "run-7" / "client-0"
    assert folder.is_dir() and not (tmp_path / "anywhere").exists()
    simulated = NodePolicy.from_node({}, environ={})
    assert simulated.verification_folder(str(tmp_path / "anywhere"), 7, "client-0") is None
    allowed = NodePolicy.from_node({}, environ={ROOTS_ENV: str(tmp_path)})
    assert allowed.verification_folder(str(tmp_path / "run"), 7, "c") == tmp_path / "run" / "c"


@pytest.mark.parametrize("planted", ["verification", "run-7", "client-0"])
def test_a_link_in_the_verification_folders_is_never_followed(tmp_path: Path, planted) -> None:
    """A link where the node's own verification folders go leaves the pictures unwritten."""
    node_dir, outside = tmp_path / "node", tmp_path / "outside"
    outside.mkdir()
    chain = ["verification", "run-7", "client-0"]
    parent = node_dir.joinpath(*chain[: chain.index(planted)])
    parent.mkdir(parents=True)
    (parent / planted).symlink_to(outside)
    policy = NodePolicy.from_node({"node-dir": str(node_dir)}, environ={})
    assert policy.verification_folder("", 7, "client-0") is None
    assert list(outside.iterdir()) == []
