"""A real node's own data and its user's deletion requests, kept in a node directory.

On a real Flower deployment each SuperNode names its directory in ``node_config``
(``node-dir``)::

    <node-dir>/data.npz               the node's training data: x (N, C, H, W) in [0, 1], y (N,)
    <node-dir>/requests/<id>.json     deletion requests its user filed (fedforget request-deletion)
    <node-dir>/requests/rejected/     requests that failed validation, each with <id>.error
    <node-dir>/deletions.json         the ledger: requests carried out (id, samples, round, run)
    <node-dir>/.fedforget.lock        the lock every reader-and-writer of the above holds
    <node-dir>/verification/run-<id>/ the node's own verification reports and pictures

A sample's id is its row in ``data.npz``. A request is ``{"id": ..., "samples": [ids],
"classes": [...]}``; ``classes`` says the user deleted whole classes (``--class``), and the
samples are then every row of those classes. A request's id is derived from its sample set,
so filing the same deletion twice yields one request, and a request already in the ledger
is never unlearned again. Samples in the ledger are gone from the node's training data for
good; samples of a pending request are still trained on until the federation carries the
request out, as in paper 000's protocol.

Several processes may serve one folder at once (a SuperNode's ClientApp, the user's
``fedforget request-deletion``), so every read-modify-write holds an ``flock`` on the lock
file, files are replaced through uniquely named temporary files, and a request file is
removed only after its ledger entry is on disk: a deletion is never lost. Anything in
``requests/`` that is not a valid request file (not UTF-8, a folder, a FIFO, a symlink) is
moved to ``rejected/`` with its reason, so one bad file never stops the node. Nothing here
imports Flower.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import tempfile
from collections.abc import Iterator
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
LOCK_FILE = ".fedforget.lock"
MAX_REQUEST_BYTES = 64 * 1024 * 1024
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

    # ------------------------------------------------------------------ the lock
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the node's lock: one process at a time reads-and-changes its files.

        Several processes may serve one node folder (a SuperNode's ClientApp processes,
        ``fedforget request-deletion``); every read-modify-write of the ledger and the
        request folder happens under this ``flock`` so no deletion is lost.
        """
        with _file_lock(self.path / LOCK_FILE):
            yield

    # ------------------------------------------------------------------ the ledger
    def ledger(self) -> list[dict[str, Any]]:
        """The carried-out requests, oldest first.

        Raises
        ------
        RequestError
            If ``deletions.json`` is not a ledger: a node must not train while it cannot tell
            which samples were deleted.
        """
        path = self.path / LEDGER_FILE
        if not path.exists():
            return []
        try:
            raw = json.loads(_read_text(path))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RequestError) as err:
            raise RequestError(f"{path}: not a deletion ledger ({_reason(err)})") from None
        entries = raw.get("carried_out") if isinstance(raw, dict) else None
        if not isinstance(entries, list) or not all(_is_entry(e) for e in entries):
            raise RequestError(f'{path}: not a deletion ledger (expected {{"carried_out": [...]}})')
        return list(entries)

    def deleted_ids(self) -> np.ndarray:
        """Row ids deleted for good (every request in the ledger)."""
        ids = [np.asarray(entry["samples"], dtype=np.int64) for entry in self.ledger()]
        return np.unique(np.concatenate(ids)) if ids else np.empty(0, dtype=np.int64)

    def carry_out(
        self, requests: list[DeletionRequest], server_round: int, run_id: int | str
    ) -> int:
        """Record ``requests`` as carried out; returns how many samples left the data.

        Under the node's lock the ledger is re-read, extended and written to disk (fsynced)
        before any request file is removed, so a crash or a concurrent writer can never lose
        a carried-out deletion.
        """
        with self.locked():
            ledger = self.ledger()
            done = {entry["id"] for entry in ledger}
            fresh = list({r.id: r for r in requests if r.id not in done}.values())
            if fresh:
                entries = ledger + [
                    {
                        **request.to_json(),
                        "round": server_round,
                        "run": str(run_id),
                        "time": datetime.now(UTC).isoformat(timespec="seconds"),
                    }
                    for request in fresh
                ]
                _atomic_json(self.path / LEDGER_FILE, {"carried_out": entries})
            for request in requests:
                (self.path / REQUESTS_DIR / f"{request.id}.json").unlink(missing_ok=True)
        return len({s for r in fresh for s in r.samples})

    # ------------------------------------------------------------------ requests
    def pending(self) -> list[DeletionRequest]:
        """Valid requests not yet carried out; anything else moves to ``requests/rejected``.

        A file that is not a regular file (a folder, a FIFO, a symlink), not UTF-8 or not a
        valid request is moved aside with its reason, so one bad file never stops the node.
        """
        folder = self.path / REQUESTS_DIR
        if not folder.exists():
            return []
        if not folder.is_dir() or folder.is_symlink():  # nothing can be pending: keep training
            log.warning("%s is not a folder of deletion requests; none read", folder)
            return []
        with self.locked():
            done = {entry["id"] for entry in self.ledger()}
            deleted = set(self.deleted_ids().tolist())
            requests: dict[str, DeletionRequest] = {}
            for path in sorted(folder.glob("*.json")):
                try:
                    request = parse_request(_read_text(path), self.data, deleted)
                except RequestError as err:
                    self._reject(path, str(err))
                    continue
                except FileNotFoundError:  # carried out meanwhile by another process
                    continue
                if request.id not in done:
                    requests.setdefault(request.id, request)
        return list(requests.values())

    def _reject(self, path: Path, reason: str) -> None:
        rejected = self.path / REQUESTS_DIR / REJECTED_DIR
        rejected.mkdir(parents=True, exist_ok=True)
        target = _free_name(rejected, path.name)
        try:
            path.replace(target)  # moves a symlink itself, never its target
        except FileNotFoundError:
            return
        except OSError as err:  # e.g. a folder that cannot be moved: leave it, say why
            log.warning("deletion request %s could not be moved aside: %s", path.name, err)
            return
        target.with_name(f"{target.stem}.error").write_text(reason + "\n")
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
    if classes:
        whole = np.flatnonzero(np.isin(data.y, classes))
        if not np.array_equal(whole, ids):
            raise RequestError(
                f"the samples are not exactly the rows of class(es) {sorted(set(classes))}"
            )
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
    folder = node.path / REQUESTS_DIR
    if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
        raise RequestError(f"{folder}: expected a folder of deletion requests")
    path = folder / f"{request.id}.json"
    with node.locked():
        done = {entry["id"] for entry in node.ledger()}
        if request.id in done or path.is_file():
            return request, path, False
        filed = {**request.to_json(), "filed": datetime.now(UTC).isoformat(timespec="seconds")}
        _atomic_json(path, filed)
    return request, path, True


def _read_text(path: Path) -> str:
    """A request or ledger file's text; only a regular file is read (a FIFO would block)."""
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):
        raise RequestError("a symbolic link, not a request file")
    if not stat.S_ISREG(info.st_mode):
        raise RequestError("not a regular file")
    if info.st_size > MAX_REQUEST_BYTES:
        raise RequestError(f"larger than {MAX_REQUEST_BYTES} bytes")
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("not UTF-8 text") from None


def _reason(err: Exception) -> str:
    if isinstance(err, json.JSONDecodeError):
        return f"not JSON: {err.msg} at line {err.lineno}"
    if isinstance(err, UnicodeDecodeError):
        return "not UTF-8 text"
    return str(err).splitlines()[0] if str(err) else type(err).__name__


def _is_entry(entry: Any) -> bool:
    """Whether a ledger entry has what the node reads from it."""
    return (
        isinstance(entry, dict)
        and isinstance(entry.get("id"), str)
        and isinstance(entry.get("samples"), list)
        and all(isinstance(s, int) and not isinstance(s, bool) for s in entry["samples"])
        and isinstance(entry.get("classes", []), list)
    )


def _free_name(folder: Path, name: str) -> Path:
    """``folder / name``, or ``name`` with a counter when that is taken."""
    target = folder / name
    stem, suffix = target.stem, target.suffix
    counter = 1
    while target.exists() or target.is_symlink():
        target = folder / f"{stem}-{counter}{suffix}"
        counter += 1
    return target


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), released on exit."""
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _atomic_json(path: Path, value: Any) -> None:
    """Write JSON durably through a uniquely named temporary file and a rename.

    A reader never sees half a file, two writers never share a temporary file, and the
    content (and the rename) is on disk when this returns.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(value, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
