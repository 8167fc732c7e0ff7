"""Node directories: the node's data, its user's deletion requests, and the ledger."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fedforget.cli import main
from fedforget.data import ArrayDataset
from fedforget.node import (
    LEDGER_FILE,
    REQUESTS_DIR,
    NodeDirectory,
    RequestError,
    file_request,
    write_node_data,
)


@pytest.fixture
def node_dir(tmp_path):
    rng = np.random.default_rng(0)
    data = ArrayDataset(
        x=rng.random((20, 1, 4, 4), dtype=np.float32), y=np.arange(20, dtype=np.int64) % 4
    )
    write_node_data(tmp_path / "node", data)
    return tmp_path / "node"


def test_a_filed_request_is_pending_until_carried_out(node_dir) -> None:
    request, path, new = file_request(node_dir, samples=[5, 1, 5])
    assert new and path.is_file() and request.samples == (1, 5)
    node = NodeDirectory(node_dir)
    assert node.pending() == [request]
    data, ids = node.local_data()
    assert len(data) == 20  # pending samples are still trained on
    assert node.forget_data(node.pending()).y.tolist() == [1, 1]
    assert node.carry_out([request], server_round=3, run_id=7) == 2
    assert node.pending() == [] and not path.exists()
    data, ids = node.local_data()
    assert len(data) == 18 and 1 not in ids and 5 not in ids
    (entry,) = node.ledger()
    assert (entry["id"], entry["round"], entry["run"]) == (request.id, 3, "7")


def test_requests_are_idempotent(node_dir) -> None:
    first, _, _ = file_request(node_dir, samples=[2, 3])
    again, _, new = file_request(node_dir, samples=[3, 2])
    assert again.id == first.id and not new
    node = NodeDirectory(node_dir)
    node.carry_out(node.pending(), 1, "a")
    assert node.carry_out([first], 2, "b") == 0  # a request carried out twice drops nothing
    assert len(node.ledger()) == 1
    assert not file_request(node_dir, samples=[2, 3])[2]  # re-filing after it was carried out


def test_class_requests_name_their_classes(node_dir) -> None:
    request, _, _ = file_request(node_dir, classes=[2])
    assert request.classes == (2,) and request.samples == (2, 6, 10, 14, 18)
    with pytest.raises(RequestError, match="holds no sample of class 9"):
        file_request(node_dir, classes=[9])


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("{not json", "not JSON"),
        ('{"samples": [1, 99]}', "sample id 99 is not held by this node"),
        ('{"samples": "all"}', '"samples" must be a list of integers'),
        ('{"samples": [1], "why": "x"}', "unknown key(s) ['why']"),
        ("[1, 2]", 'expected an object with "samples"'),
        ('{"samples": []}', "names no sample"),
    ],
)
def test_malformed_requests_are_rejected_with_a_reason(node_dir, content, reason) -> None:
    folder = node_dir / REQUESTS_DIR
    folder.mkdir()
    (folder / "bad.json").write_text(content)
    good, _, _ = file_request(node_dir, samples=[4])
    assert NodeDirectory(node_dir).pending() == [good]  # the valid one still goes through
    assert not (folder / "bad.json").exists()
    assert reason in (folder / "rejected" / "bad.error").read_text()
    assert (folder / "rejected" / "bad.json").read_text() == content


def test_a_request_for_deleted_samples_only_is_rejected(node_dir) -> None:
    request, _, _ = file_request(node_dir, samples=[7])
    node = NodeDirectory(node_dir)
    node.carry_out([request], 1, "r")
    (node_dir / REQUESTS_DIR / "copy.json").write_text(json.dumps({"samples": [7]}))
    assert node.pending() == []
    error = (node_dir / REQUESTS_DIR / "rejected" / "copy.error").read_text()
    assert "already deleted" in error


def test_missing_or_broken_data_is_a_request_error(tmp_path) -> None:
    with pytest.raises(RequestError, match="no such file"):
        NodeDirectory(tmp_path)
    (tmp_path / "data.npz").write_bytes(b"junk")
    with pytest.raises(RequestError, match="expected arrays x and y"):
        NodeDirectory(tmp_path)


def test_request_deletion_cli(node_dir, tmp_path, capsys) -> None:
    ids = tmp_path / "ids.json"
    ids.write_text("[0, 4]")
    main(["request-deletion", "--node-dir", str(node_dir), "--samples", str(ids)])
    assert "filed deletion request r-" in capsys.readouterr().out
    main(["request-deletion", "--node-dir", str(node_dir), "--sample-ids", "4,0"])
    assert "already filed or carried out" in capsys.readouterr().out
    main(["request-deletion", "--node-dir", str(node_dir), "--class", "3"])
    assert "of class(es) 3" in capsys.readouterr().out
    assert len(list((node_dir / REQUESTS_DIR).glob("*.json"))) == 2
    assert not (node_dir / LEDGER_FILE).exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ([], "say what to delete"),
        (["--sample-ids", "1,55"], "sample id 55 is not held"),
        (["--class", "7"], "holds no sample of class 7"),
    ],
)
def test_request_deletion_errors_are_one_line(node_dir, capsys, args, fragment) -> None:
    with pytest.raises(SystemExit) as info:
        main(["request-deletion", "--node-dir", str(node_dir), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_request_deletion_for_a_missing_node(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["request-deletion", "--node-dir", str(tmp_path / "nope"), "--class", "1"])
    assert "data.npz: no such file" in capsys.readouterr().err
