"""A node folder under concurrent writers and hostile files: nothing lost, nothing stuck."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest

from fedforget.data import ArrayDataset
from fedforget.node import (
    LEDGER_FILE,
    REQUESTS_DIR,
    NodeDirectory,
    RequestError,
    file_request,
    parse_request,
    write_node_data,
)

ROWS = 60
WORKERS = 4
REQUESTS_PER_WORKER = 8
SAME_REQUESTS = 20


@pytest.fixture
def node_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        x=rng.random((ROWS, 1, 4, 4), dtype=np.float32), y=np.arange(ROWS, dtype=np.int64) % 4
    )
    write_node_data(tmp_path / "node", data)
    return tmp_path / "node"


def _file_and_carry_out(node_dir: str, rows: list[int], start: multiprocessing.Event) -> None:
    """One process: file a request per row and carry each out at once."""
    start.wait()
    for row in rows:
        request, _, _ = file_request(node_dir, samples=[row])
        node = NodeDirectory(node_dir)
        node.carry_out(node.pending() or [request], server_round=row, run_id=os.getpid())


def _file_same(node_dir: str, start: multiprocessing.Event, errors: multiprocessing.Queue) -> None:
    start.wait()
    for row in range(SAME_REQUESTS):  # every process files the same requests, in step
        try:
            file_request(node_dir, samples=[row, row + 1])
        except Exception as err:  # reported to the parent, which asserts there were none
            errors.put(repr(err))


def test_concurrent_writers_lose_no_ledger_entry(node_dir: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    rows = list(range(WORKERS * REQUESTS_PER_WORKER))
    workers = [
        context.Process(target=_file_and_carry_out, args=(str(node_dir), rows[i::WORKERS], start))
        for i in range(WORKERS)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    ledger = NodeDirectory(node_dir).ledger()
    assert sorted(s for entry in ledger for s in entry["samples"]) == rows
    assert len({entry["id"] for entry in ledger}) == len(rows)
    assert not list((node_dir / REQUESTS_DIR).glob("*.json"))  # each removed after its entry
    assert not [p.name for p in node_dir.rglob("*.tmp")]  # no temporary file left behind


def test_filing_the_same_request_at_once_never_fails(node_dir: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, errors = context.Event(), context.Queue()
    workers = [
        context.Process(target=_file_same, args=(str(node_dir), start, errors)) for _ in range(6)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=120)
    reported = [errors.get(timeout=1) for _ in range(errors.qsize())] if not errors.empty() else []
    assert reported == []
    assert len(list((node_dir / REQUESTS_DIR).glob("*.json"))) == SAME_REQUESTS


def test_a_request_file_goes_only_after_its_ledger_entry(node_dir: Path, monkeypatch) -> None:
    request, path, _ = file_request(node_dir, samples=[3])
    node = NodeDirectory(node_dir)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("fedforget.node._atomic_json", disk_full)
    with pytest.raises(OSError):
        node.carry_out([request], 1, "r")
    assert path.is_file()  # still filed: the deletion will be carried out again, not lost
    assert not (node_dir / LEDGER_FILE).exists()


def _rejected(node_dir: Path) -> Path:
    return node_dir / REQUESTS_DIR / "rejected"


def test_a_non_utf8_request_is_moved_aside(node_dir: Path) -> None:
    folder = node_dir / REQUESTS_DIR
    folder.mkdir()
    (folder / "latin.json").write_bytes(b'{"samples": [1], "x": "\xe9"}')
    good, _, _ = file_request(node_dir, samples=[4])
    assert NodeDirectory(node_dir).pending() == [good]
    assert "not UTF-8" in (_rejected(node_dir) / "latin.error").read_text()


def test_a_folder_named_like_a_request_is_moved_aside(node_dir: Path) -> None:
    folder = node_dir / REQUESTS_DIR / "x.json"
    folder.mkdir(parents=True)
    good, _, _ = file_request(node_dir, samples=[4])
    assert NodeDirectory(node_dir).pending() == [good]
    assert (_rejected(node_dir) / "x.json").is_dir() and not folder.exists()
    assert "not a regular file" in (_rejected(node_dir) / "x.error").read_text()


def test_a_fifo_request_does_not_hang_the_node(node_dir: Path) -> None:
    folder = node_dir / REQUESTS_DIR
    folder.mkdir()
    os.mkfifo(folder / "pipe.json")  # opening it for reading would block forever
    good, _, _ = file_request(node_dir, samples=[4])
    assert NodeDirectory(node_dir).pending() == [good]
    assert "not a regular file" in (_rejected(node_dir) / "pipe.error").read_text()


def test_a_symlink_is_moved_aside_and_its_target_untouched(node_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.json"
    target.write_text(json.dumps({"samples": [1]}))
    folder = node_dir / REQUESTS_DIR
    folder.mkdir()
    (folder / "link.json").symlink_to(target)
    assert NodeDirectory(node_dir).pending() == []
    assert (_rejected(node_dir) / "link.json").is_symlink()
    assert target.read_text() == json.dumps({"samples": [1]})


def test_a_rejected_name_never_overwrites_an_earlier_rejection(node_dir: Path) -> None:
    folder = node_dir / REQUESTS_DIR
    folder.mkdir()
    for text in ("{first", "{second"):
        (folder / "bad.json").write_text(text)
        NodeDirectory(node_dir).pending()
    kept = sorted(p.read_text() for p in _rejected(node_dir).glob("*.json"))
    assert kept == ["{first", "{second"]


@pytest.mark.parametrize(
    "content", [b"{not json", b"\xff\xfe", b'{"carried_out": 3}', b'{"carried_out": [{"id": 1}]}']
)
def test_a_broken_ledger_stops_the_node_with_one_line(node_dir: Path, content: bytes) -> None:
    (node_dir / LEDGER_FILE).write_bytes(content)
    node = NodeDirectory(node_dir)
    with pytest.raises(RequestError, match="not a deletion ledger") as info:
        node.local_data()  # never train without knowing what was deleted
    assert "\n" not in str(info.value)
    with pytest.raises(RequestError, match="not a deletion ledger"):
        file_request(node_dir, samples=[1])


def test_requests_that_is_a_file_refuses_new_requests_only(node_dir: Path) -> None:
    (node_dir / REQUESTS_DIR).write_text("oops")
    with pytest.raises(RequestError, match="expected a folder of deletion requests"):
        file_request(node_dir, samples=[1])
    assert NodeDirectory(node_dir).pending() == []  # the node keeps training; nothing is filed


def test_a_request_whose_classes_do_not_match_its_samples_is_rejected(node_dir: Path) -> None:
    data = NodeDirectory(node_dir).data
    with pytest.raises(RequestError, match="not exactly the rows of class"):
        parse_request(json.dumps({"samples": [0, 1], "classes": [1]}), data)
    every_two = np.flatnonzero(data.y == 2).tolist()
    assert parse_request(json.dumps({"samples": every_two, "classes": [2]}), data).classes == (2,)
