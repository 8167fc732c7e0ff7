"""A node never trains on a deleted sample, whatever is done to its ledger or request folder.

Each case prepares a real node directory that already carried out one deletion (rows 3, 5
and 7 are in its ledger) and holds one valid pending request (rows 10 and 11), damages the
ledger or the request folder one way, and sends the node a FedAvg training message through
the ClientApp's own handler. ``train_local`` is wrapped so the test sees every dataset the
node would train on:

- a ledger the node cannot trust stops it: the handler raises one line naming
  ``deletions.json`` (the server records the node as a fault) and nothing is trained;
- a bad file in ``requests/`` never stops it: the node trains (without the deleted rows),
  still reports the valid pending request, moves the bad entry to ``requests/rejected/``
  with its reason and writes nothing outside its directory; only a ``requests`` that is a
  symbolic link stops it, because a request behind the link would otherwise be ignored.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, RecordDict

from fedforget import node as node_module
from fedforget import protocol as P
from fedforget.clients import app as client_app
from fedforget.config import SimulationConfig
from fedforget.data import ArrayDataset
from fedforget.models import build_model
from fedforget.node import (
    LEDGER_COPY_FILE,
    LEDGER_FILE,
    MAX_LEDGER_BYTES,
    MAX_REQUEST_BYTES,
    REJECTED_DIR,
    REQUESTS_DIR,
    NodeDirectory,
    RequestError,
    file_request,
    request_id,
    write_node_data,
)

ROWS = 40
DELETED = [3, 5, 7]
PENDING = [10, 11]


@pytest.fixture(autouse=True)
def task_identity(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower builds a Message only inside a task; pretend to be one."""
    from flwr.supercore.task_identity import TaskIdentity

    for name in ("_run_id", "_task_id", "_node_id"):
        monkeypatch.setattr(TaskIdentity, name, 1)


@pytest.fixture
def trained_on(monkeypatch: pytest.MonkeyPatch) -> list[ArrayDataset]:
    """Every dataset the ClientApp hands to ``train_local`` (the real one still runs)."""
    seen: list[ArrayDataset] = []
    real = client_app.train_local

    def recording(model, data, **kwargs):
        seen.append(data)
        return real(model, data, **kwargs)

    monkeypatch.setattr(client_app, "train_local", recording)
    return seen


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A node whose ledger holds rows 3, 5, 7 and whose user filed rows 10, 11 since."""
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        x=rng.random((ROWS, 1, 8, 8), dtype=np.float32), y=np.arange(ROWS, dtype=np.int64) % 10
    )
    folder = tmp_path / "node"
    write_node_data(folder, data)
    done, _, _ = file_request(folder, samples=DELETED)
    NodeDirectory(folder).carry_out([done], server_round=1, run_id=1)
    file_request(folder, samples=PENDING)
    (tmp_path / "outside").mkdir()
    return folder


def _train(node_dir: Path) -> Message:
    config = SimulationConfig(
        clients=2,
        data={"dataset": "digits"},
        deletion={"mode": "requests"},
        train={"rounds": 2, "local_epochs": 1},
    )
    entries = {P.RUN_CONFIG_KEY: config.to_json(), P.SERVER_ROUND: 1, P.NUM_CLASSES: 10}
    model = ArrayRecord(build_model("lenet5", 10, 1, 8).state_dict())
    content = RecordDict({P.ARRAYS: model, P.CONFIG: ConfigRecord(entries)})
    message = Message(content, dst_node_id=1, message_type=P.TRAIN)
    context = Context(
        run_id=1,
        node_id=1,
        node_config={"node-dir": str(node_dir), "partition-id": 0},
        state=RecordDict(),
        run_config={},
    )
    return client_app.train(message, context)


def _rows(node_dir: Path, data: ArrayDataset) -> set[int]:
    """The node's row ids of the samples in ``data`` (every row's image is distinct)."""
    held = NodeDirectory(node_dir).data.x.reshape(ROWS, -1)
    return {
        int(np.flatnonzero((held == row).all(axis=1))[0]) for row in data.x.reshape(len(data), -1)
    }


def _never_trained_on_deleted(node_dir: Path, trained_on: list[ArrayDataset]) -> None:
    for data in trained_on:
        assert not _rows(node_dir, data) & set(DELETED)


def test_the_intact_node_trains_without_its_deleted_rows(node, trained_on) -> None:
    """The harness itself: an intact node trains, on every row but the deleted ones."""
    reply = _train(node)
    (data,) = trained_on
    assert _rows(node, data) == set(range(ROWS)) - set(DELETED)
    # one epoch over the rows asked to be deleted: the pending ones, trained on until carried out
    assert int(reply.content[P.METRICS][P.DELETED_PASSES]) == len(PENDING)
    assert list(reply.content[P.DELETION][P.REQUESTS]) == [request_id(np.array(PENDING))]
    assert (node / LEDGER_COPY_FILE).is_file()


# ---------------------------------------------------------------------- the ledger
def _entry(samples: list, **changes: object) -> dict:
    """A ledger entry whose id matches ``samples`` (so only the damage named is wrong)."""
    ids = np.array([s for s in samples if type(s) is int], dtype=np.int64)
    return {"id": request_id(ids), "samples": samples, "classes": [], "round": 1, **changes}


def _write_ledger(value: object) -> Callable[[Path], None]:
    def damage(node_dir: Path) -> None:
        text = value if isinstance(value, str | bytes) else json.dumps(value)
        data = text.encode() if isinstance(text, str) else text
        (node_dir / LEDGER_FILE).write_bytes(data)

    return damage


def _replace_ledger(make: Callable[[Path, Path], None]) -> Callable[[Path], None]:
    def damage(node_dir: Path) -> None:
        ledger = node_dir / LEDGER_FILE
        elsewhere = node_dir.parent / "outside" / "ledger.json"
        elsewhere.write_bytes(ledger.read_bytes())
        ledger.unlink()
        make(ledger, elsewhere)

    return damage


def _huge_ledger(node_dir: Path) -> None:
    with (node_dir / LEDGER_FILE).open("r+b") as handle:
        handle.truncate(MAX_LEDGER_BYTES + 1)  # sparse: nothing of that size is written


def _edited_ledger(node_dir: Path) -> None:
    ledger = json.loads((node_dir / LEDGER_FILE).read_text())
    ledger["carried_out"][0]["samples"] = DELETED[:-1]  # row 7 "undeleted", id kept
    (node_dir / LEDGER_FILE).write_text(json.dumps(ledger))


LEDGER_CASES: dict[str, Callable[[Path], None]] = {
    "deleted": lambda n: (n / LEDGER_FILE).unlink(),
    "dangling symlink": _replace_ledger(lambda link, _: link.symlink_to(link.parent / "gone")),
    "symlink to a ledger": _replace_ledger(lambda link, target: link.symlink_to(target)),
    "folder": _replace_ledger(lambda link, _: link.mkdir()),
    "fifo": _replace_ledger(lambda link, _: os.mkfifo(link)),
    "not json": _write_ledger("{oops"),
    "not utf-8": _write_ledger(b'{"carried_out": [] \xff}'),
    "wrong structure": _write_ledger({"carried_out": {"id": "r-1", "samples": DELETED}}),
    "emptied (older ledger)": _write_ledger({"carried_out": []}),
    "out of range": _write_ledger({"carried_out": [_entry([*DELETED, ROWS])]}),
    "negative": _write_ledger({"carried_out": [_entry([-1, *DELETED])]}),
    "duplicated ids": _write_ledger({"carried_out": [_entry([3, 3, 5, 7])]}),
    "duplicated entry": _write_ledger({"carried_out": [_entry(DELETED), _entry(DELETED)]}),
    "not integers": _write_ledger({"carried_out": [_entry([3.0, 5, 7])]}),
    "booleans": _write_ledger({"carried_out": [_entry([True, 3, 5, 7])]}),
    "edited samples": _edited_ledger,
    "classes that do not match": _write_ledger({"carried_out": [_entry(DELETED, classes=[3])]}),
    "deeply nested": _write_ledger('{"carried_out": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "huge integer": _write_ledger(
        '{"carried_out": [{"id": "r", "samples": [' + "9" * 5000 + "]}]}"
    ),
    "huge file": _huge_ledger,
}


@pytest.mark.parametrize("damage", list(LEDGER_CASES.values()), ids=list(LEDGER_CASES))
def test_a_ledger_the_node_cannot_trust_stops_it_with_one_line(node, trained_on, damage) -> None:
    damage(node)
    with pytest.raises(RequestError) as refused:
        _train(node)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(str(node / LEDGER_FILE)), message
    assert trained_on == []  # nothing was trained, on deleted samples or any other
    with pytest.raises(RequestError):  # nor can the user file a request on it
        file_request(node, samples=[20])


def test_an_unreadable_ledger_stops_the_node(node, trained_on, monkeypatch) -> None:
    """Permissions do not stop root, so the refusal of the open is simulated."""
    real_open = os.open

    def refusing(path, flags, mode=0o777, *, dir_fd=None):
        if path == LEDGER_FILE:
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(node_module.os, "open", refusing)
    with pytest.raises(RequestError, match="Permission denied"):
        _train(node)
    assert trained_on == []


# ---------------------------------------------------------------------- the request folder
def _requests(node_dir: Path) -> Path:
    return node_dir / REQUESTS_DIR


def _rejected(node_dir: Path) -> Path:
    return node_dir / REQUESTS_DIR / REJECTED_DIR


def _bad_request(node_dir: Path) -> None:
    (_requests(node_dir) / "bad.json").write_text("{oops")


def _socket(path: Path) -> None:
    here = Path.cwd()
    os.chdir(path.parent)  # an AF_UNIX path is short: bind by its name alone
    try:
        with socket.socket(socket.AF_UNIX) as server:
            server.bind(path.name)
    finally:
        os.chdir(here)


def _device(path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a device file needs root")
    os.mknod(path, 0o644 | 0o020000, os.makedev(1, 5))  # a character device like /dev/zero


def _rejected_is(make: Callable[[Path, Path], None]) -> Callable[[Path], None]:
    def damage(node_dir: Path) -> None:
        make(_rejected(node_dir), node_dir.parent / "outside")
        _bad_request(node_dir)

    return damage


def _requests_linked(node_dir: Path) -> None:
    moved = node_dir.parent / "outside" / "requests"
    _requests(node_dir).rename(moved)
    _requests(node_dir).symlink_to(moved)


def _requests_is_a_file(node_dir: Path) -> None:
    for entry in _requests(node_dir).iterdir():
        entry.unlink()
    _requests(node_dir).rmdir()
    _requests(node_dir).write_text("not a folder\n")


def _write(name: str, content: bytes) -> Callable[[Path], None]:
    return lambda node_dir: (_requests(node_dir) / name).write_bytes(content)


def _huge_request(node_dir: Path) -> None:
    with (_requests(node_dir) / "huge.json").open("wb") as handle:
        handle.truncate(MAX_REQUEST_BYTES + 1)


def _folder_request(node_dir: Path) -> None:
    (_requests(node_dir) / "dir.json" / "inner").mkdir(parents=True)


def _outside_request(node_dir: Path) -> None:
    target = node_dir.parent / "outside" / "elsewhere.json"
    target.write_text(json.dumps({"samples": [20]}))
    (_requests(node_dir) / "link.json").symlink_to(target)


# name -> (damage, the entries in requests/ that must end in rejected/ with a reason)
REQUEST_CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "deeply nested": (_write("deep.json", b"[" * 100_000 + b"]" * 100_000), ["deep.json"]),
    "huge file": (_huge_request, ["huge.json"]),
    "huge integer": (
        _write("digits.json", b'{"samples": [' + b"9" * 10_000 + b"]}"),
        ["digits.json"],
    ),
    "not utf-8": (_write("latin.json", b'{"samples": [1], "x": "\xe9"}'), ["latin.json"]),
    "fifo": (lambda n: os.mkfifo(_requests(n) / "pipe.json"), ["pipe.json"]),
    "socket": (lambda n: _socket(_requests(n) / "sock.json"), ["sock.json"]),
    "device": (lambda n: _device(_requests(n) / "dev.json"), ["dev.json"]),
    "link to a device": (
        lambda n: (_requests(n) / "zero.json").symlink_to("/dev/zero"),
        ["zero.json"],
    ),
    "link to a request elsewhere": (_outside_request, ["link.json"]),
    "dangling link": (
        lambda n: (_requests(n) / "gone.json").symlink_to(n / "nowhere"),
        ["gone.json"],
    ),
    "folder": (_folder_request, ["dir.json"]),
    "rejected is a file": (_rejected_is(lambda r, _: r.write_text("x")), ["rejected", "bad.json"]),
    "rejected links outside": (
        _rejected_is(lambda r, out: r.symlink_to(out)),
        ["rejected", "bad.json"],
    ),
    "rejected dangling link": (
        _rejected_is(lambda r, out: r.symlink_to(out / "no")),
        ["rejected", "bad.json"],
    ),
    "rejected is a fifo": (_rejected_is(lambda r, _: os.mkfifo(r)), ["rejected", "bad.json"]),
}


@pytest.mark.parametrize(
    ("damage", "rejected"), list(REQUEST_CASES.values()), ids=list(REQUEST_CASES)
)
def test_a_bad_entry_in_requests_never_stops_the_node(node, trained_on, damage, rejected) -> None:
    damage(node)
    outside = sorted(p.name for p in (node.parent / "outside").rglob("*"))
    for _ in range(2):  # every message, not just the first
        reply = _train(node)
        assert list(reply.content[P.DELETION][P.REQUESTS]) == [request_id(np.array(PENDING))]
        assert int(reply.content[P.METRICS][P.DELETED_PASSES]) == len(PENDING)
    _never_trained_on_deleted(node, trained_on)
    assert len(trained_on) == 2
    assert sorted(p.name for p in (node.parent / "outside").rglob("*")) == outside
    assert _rejected(node).is_dir() and not _rejected(node).is_symlink()
    for name in rejected:  # a "rejected" that was no folder now lies inside the real one
        assert name == REJECTED_DIR or not os.path.lexists(_requests(node) / name)
        assert os.path.lexists(_rejected(node) / name)
        assert (_rejected(node) / f"{Path(name).stem}.error").read_text().strip()


def test_a_symlinked_requests_folder_stops_the_node_with_one_line(node, trained_on) -> None:
    """A request behind the link must not be ignored: the node refuses rather than train."""
    _requests_linked(node)
    with pytest.raises(RequestError) as refused:
        _train(node)
    message = str(refused.value)
    assert "\n" not in message and "is a symbolic link" in message, message
    assert trained_on == []
    with pytest.raises(RequestError, match="is a symbolic link"):
        file_request(node, samples=[20])


def test_a_requests_file_holds_no_request_and_the_node_keeps_training(node, trained_on) -> None:
    _requests_is_a_file(node)
    reply = _train(node)
    assert P.DELETION not in reply.content and int(reply.content[P.METRICS][P.DELETED_PASSES]) == 0
    _never_trained_on_deleted(node, trained_on)
    with pytest.raises(RequestError, match="expected a folder of deletion requests"):
        file_request(node, samples=[20])
    assert (_requests(node)).read_text() == "not a folder\n"
