"""A real node's own data and its user's deletion requests, kept in a node directory.

On a real Flower deployment each SuperNode names its directory in ``node_config``
(``node-dir``)::

    <node-dir>/data.npz               the node's training data: x (N, C, H, W) in [0, 1], y (N,)
    <node-dir>/requests/<id>.json     deletion requests its user filed (fedforget request-deletion)
    <node-dir>/requests/rejected/     requests that failed validation, each with <id>.error
    <node-dir>/deletions.json         the ledger: requests carried out (id, samples, round, run)

A sample's id is its row in ``data.npz``. A request is ``{"id": ..., "samples": [ids],
"classes": [...]}``; ``classes`` says the user deleted whole classes (``--class``), and the
samples are then every row of those classes. A request's id is derived from its sample set,
so filing the same deletion twice yields one request, and a request already in the ledger
is never unlearned again. Samples in the ledger are gone from the node's training data for
good; samples of a pending request are still trained on until the federation carries the
request out, as in paper 000's protocol. Nothing here imports Flower.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedforget.data import ArrayDataset

__all__ = [
    "DATA_FILE",
    "LEDGER_FILE",
    "REQUESTS_DIR",
    "DeletionRequest",
    "NodeDirectory",
    "RequestError",
    "file_request",
    "write_node_data",
]

DATA_FILE = "data.npz"
REQUESTS_DIR = "requests"
REJECTED_DIR = "rejected"
LEDGER_FILE = "deletions.json"
REQUEST_KEYS = {"id", "samples", "classes", "filed"}

log = logging.getLogger("fedforget.node")


class RequestError(ValueError):
    """A deletion request that cannot be carried out (one line, for the node's user)."""


@dataclass(frozen=True)
class DeletionRequest:
    """One validated deletion request.

    Attributes
    ----------
    id : str
        Derived from the sample set (``r-`` + 12 hex digits).
    samples : tuple of int
        Row ids in the node's ``data.npz``, sorted.
    classes : tuple of int
        The deleted classes when the user deleted whole classes; empty otherwise.
    """

    id: str
    samples: tuple[int, ...]
    classes: tuple[int, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The request file's content."""
        return {"id": self.id, "samples": list(self.samples), "classes": list(self.classes)}


def request_id(samples: np.ndarray) -> str:
    """A request's id: a hash of its sorted, distinct sample ids."""
    ids = np.unique(np.asarray(samples, dtype=np.int64))
    return "r-" + hashlib.sha256(ids.tobytes()).hexdigest()[:12]


def write_node_data(node_dir: Path | str, data: ArrayDataset) -> Path:
    """Write a node's training data (``data.npz``); creates the directory."""
    folder = Path(node_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / DATA_FILE
    np.savez(path, x=data.x, y=data.y)
    return path


class NodeDirectory:
    """A node's data, pending deletion requests and ledger of carried-out deletions.

    Parameters
    ----------
    path : Path or str
        The node directory (must hold ``data.npz``).

    Raises
    ------
    RequestError
        If the directory or its data file is missing or malformed.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        data_file = self.path / DATA_FILE
        if not data_file.is_file():
            raise RequestError(f"{data_file}: no such file (the node's training data)")
        try:
            with np.load(data_file) as arrays:
                self.data = ArrayDataset(
                    x=arrays["x"].astype(np.float32), y=arrays["y"].astype(np.int64)
                )
        except (OSError, KeyError, ValueError) as err:
            raise RequestError(f"{data_file}: expected arrays x and y ({err})") from None

    # ------------------------------------------------------------------ the ledger
    def ledger(self) -> list[dict[str, Any]]:
        """The carried-out requests, oldest first."""
        path = self.path / LEDGER_FILE
        if not path.is_file():
            return []
        return list(json.loads(path.read_text()).get("carried_out", []))

    def deleted_ids(self) -> np.ndarray:
        """Row ids deleted for good (every request in the ledger)."""
        ids = [np.asarray(entry["samples"], dtype=np.int64) for entry in self.ledger()]
        return np.unique(np.concatenate(ids)) if ids else np.empty(0, dtype=np.int64)

    def carry_out(
        self, requests: list[DeletionRequest], server_round: int, run_id: int | str
    ) -> int:
        """Record ``requests`` as carried out; returns how many samples left the data."""
        done = {entry["id"] for entry in self.ledger()}
        fresh = [r for r in requests if r.id not in done]
        entries = self.ledger() + [
            {
                **request.to_json(),
                "round": server_round,
                "run": str(run_id),
                "time": datetime.now(UTC).isoformat(timespec="seconds"),
            }
            for request in fresh
        ]
        _atomic_json(self.path / LEDGER_FILE, {"carried_out": entries})
        for request in fresh:
            (self.path / REQUESTS_DIR / f"{request.id}.json").unlink(missing_ok=True)
        return len({s for r in fresh for s in r.samples})

    # ------------------------------------------------------------------ requests
    def pending(self) -> list[DeletionRequest]:
        """Valid requests not yet carried out; invalid files move to ``requests/rejected``."""
        folder = self.path / REQUESTS_DIR
        if not folder.is_dir():
            return []
        done = {entry["id"] for entry in self.ledger()}
        deleted = set(self.deleted_ids().tolist())
        requests: dict[str, DeletionRequest] = {}
        for path in sorted(folder.glob("*.json")):
            try:
                request = parse_request(path.read_text(), self.data, deleted)
            except RequestError as err:
                self._reject(path, str(err))
                continue
            if request.id not in done:
                requests.setdefault(request.id, request)
        return list(requests.values())

    def _reject(self, path: Path, reason: str) -> None:
        rejected = self.path / REQUESTS_DIR / REJECTED_DIR
        rejected.mkdir(parents=True, exist_ok=True)
        path.replace(rejected / path.name)
        (rejected / f"{path.stem}.error").write_text(reason + "\n")
        log.warning("deletion request %s rejected: %s", path.name, reason)

    def local_data(self, drop: np.ndarray | None = None) -> tuple[ArrayDataset, np.ndarray]:
        """The training data still held (ledger rows dropped, and ``drop``) and its row ids.

        Samples of pending requests stay until their request is carried out, unless dropped.
        """
        gone = self.deleted_ids() if drop is None else np.union1d(self.deleted_ids(), drop)
        keep = np.setdiff1d(np.arange(len(self.data)), gone)
        return self.data.subset(keep), keep

    def forget_data(self, requests: list[DeletionRequest]) -> ArrayDataset:
        """The samples of ``requests`` (D_f of this node)."""
        ids = np.unique(np.array([s for r in requests for s in r.samples], dtype=np.int64))
        return self.data.subset(ids)


def parse_request(
    text: str, data: ArrayDataset, deleted: set[int] | None = None
) -> DeletionRequest:
    """Validate a request file's text against the node's data.

    Raises
    ------
    RequestError
        For malformed JSON, unknown keys, ids the node does not hold, classes it holds no
        sample of, or a request whose every sample is already deleted.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(raw, dict) or "samples" not in raw:
        raise RequestError('expected an object with "samples": [row ids]')
    unknown = set(raw) - REQUEST_KEYS
    if unknown:
        raise RequestError(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(REQUEST_KEYS)}")
    samples = _int_list(raw["samples"], "samples")
    classes = _int_list(raw.get("classes", []), "classes")
    bad = [s for s in samples if not 0 <= s < len(data)]
    if bad:
        raise RequestError(f"sample id {bad[0]} is not held by this node (rows 0-{len(data) - 1})")
    if not samples:
        raise RequestError("the request names no sample")
    remaining = sorted(set(samples) - (deleted or set()))
    if not remaining:
        raise RequestError("every sample of this request is already deleted")
    ids = np.array(sorted(set(samples)), dtype=np.int64)
    return DeletionRequest(request_id(ids), tuple(ids.tolist()), tuple(sorted(set(classes))))


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise RequestError(f'"{name}" must be a list of integers')
    return list(value)


def file_request(
    node_dir: Path | str,
    samples: list[int] | None = None,
    classes: list[int] | None = None,
) -> tuple[DeletionRequest, Path, bool]:
    """File a deletion request in ``node_dir`` after validating it against the node's data.

    Parameters
    ----------
    node_dir : Path or str
        The node directory.
    samples : list of int, optional
        Row ids to delete.
    classes : list of int, optional
        Delete every sample of these classes.

    Returns
    -------
    tuple
        The request, its file, and whether it is new (``False`` when the same deletion was
        already filed or carried out).

    Raises
    ------
    RequestError
        For ids or classes the node does not hold, or a request naming nothing.
    """
    node = NodeDirectory(node_dir)
    ids = list(samples or [])
    wanted = sorted(set(classes or []))
    missing = [c for c in wanted if not np.any(node.data.y == c)]
    if missing:
        raise RequestError(f"this node holds no sample of class {missing[0]}")
    if wanted:
        ids += np.flatnonzero(np.isin(node.data.y, wanted)).tolist()
    body = json.dumps({"samples": sorted(set(ids)), "classes": wanted})
    request = parse_request(body, node.data)
    path = node.path / REQUESTS_DIR / f"{request.id}.json"
    done = {entry["id"] for entry in node.ledger()}
    if request.id in done or path.is_file():
        return request, path, False
    filed = {**request.to_json(), "filed": datetime.now(UTC).isoformat(timespec="seconds")}
    _atomic_json(path, filed)
    return request, path, True


def _atomic_json(path: Path, value: Any) -> None:
    """Write JSON through a temporary file and a rename, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)
