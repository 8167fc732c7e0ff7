"""A real node's own data and its user's deletion requests, kept in a node directory.

On a real Flower deployment each SuperNode names its directory in ``node_config``
(``node-dir``)::

    <node-dir>/data.npz               the node's training data: x (N, C, H, W) in [0, 1], y (N,)
    <node-dir>/requests/<id>.json     deletion requests its user filed (fedforget request-deletion)
    <node-dir>/requests/rejected/     requests that failed validation, each with <id>.error
    <node-dir>/deletions.json         the ledger: requests carried out (id, samples, round, run)
    <node-dir>/.deletions-copy.json   a second copy of the ledger (see below)
    <node-dir>/.fedforget.lock        the lock every reader-and-writer of the above holds
    <node-dir>/verification/run-<id>/ the node's own verification reports and pictures

A sample's id is its row in ``data.npz``. A request is ``{"id": ..., "samples": [ids],
"classes": [...]}``; ``classes`` says the user deleted whole classes (``--class``), and the
samples are then every row of those classes. A request's id is derived from its sample set,
so filing the same deletion twice yields one request, and a request already in the ledger
is never unlearned again. Samples in the ledger are gone from the node's training data for
good; samples of a pending request are still trained on until the federation carries the
request out, as in paper 000's protocol.

**The ledger is the source of truth and fails closed.** A node that cannot tell which samples
it deleted must not train, so every read of the ledger checks it: a regular file (never
followed through a symbolic link, never a FIFO or a folder), at most ``MAX_LEDGER_BYTES``,
UTF-8 JSON of the exact structure the node writes, every entry's sample ids distinct, sorted
rows of ``data.npz`` whose hash is the entry's request id, classes that match their rows, no
request twice. Anything else raises :class:`RequestError`, one line naming the file and the
reason; every ClientApp message then fails with it, so the server records the node as a fault.
A missing ledger is told apart from a node that never deleted anything by a second copy
written beside it after every carried-out request: a node with a copy and no ledger, or with a
ledger that lacks a request the copy holds (an older ledger put back), refuses to train. The
copy is hidden (a leading dot) so that clearing the visible files does not remove both; a
node from which both were removed cannot know it ever deleted anything -- that is the limit of
keeping the record on the node itself.

Several processes may serve one folder at once (a SuperNode's ClientApp, the user's
``fedforget request-deletion``), so every read-modify-write holds an ``flock`` on the lock
file, files are replaced through uniquely named temporary files, and a request file is
removed only after its ledger entry is on disk: a deletion is never lost.

**One file never stops a node.** The node's own folders are opened relative to the node
directory's descriptor with ``O_NOFOLLOW``: nothing is written through a symbolic link, and no
file is opened that could block (FIFOs, devices and sockets are refused from ``lstat`` before
any open). Anything in ``requests/`` that is not a valid request file (deep or huge JSON, not
UTF-8, a folder, a FIFO, a device, a socket, a symbolic link) is moved to ``rejected/`` with
its reason; an entry named ``rejected`` that is not a folder (a file, a link) is itself moved
into a new ``rejected/`` folder with its reason. A ``requests`` that is a symbolic link fails
closed: a request behind it would otherwise be ignored without a word, so the node refuses to
train until the link is replaced by the folder. A ``requests`` that is a plain file holds no
request: the node keeps training (with a warning) and ``request-deletion`` refuses to file
there. Nothing here imports Flower.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import stat
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from fedforget.data import ArrayDataset

__all__ = [
    "DATA_FILE",
    "LEDGER_COPY_FILE",
    "LEDGER_FILE",
    "REJECTED_DIR",
    "REQUESTS_DIR",
    "DeletionRequest",
    "NodeDirectory",
    "RequestError",
    "file_request",
    "own_folder",
    "write_node_data",
]

DATA_FILE = "data.npz"
REQUESTS_DIR = "requests"
REJECTED_DIR = "rejected"
LEDGER_FILE = "deletions.json"
LEDGER_COPY_FILE = ".deletions-copy.json"
LOCK_FILE = ".fedforget.lock"
MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_LEDGER_BYTES = 64 * 1024 * 1024
REQUEST_KEYS = {"id", "samples", "classes", "filed"}
LEDGER_KEYS = {"id", "samples", "classes", "round", "run", "time"}
LEDGER_KEY = "carried_out"
FREE_NAME_TRIES = 1000

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

log = logging.getLogger("fedforget.node")


class RequestError(ValueError):
    """A deletion request or node folder the node cannot use (one line, for its user)."""


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
        The node directory (must hold ``data.npz``). The directory itself may be reached
        through a symbolic link (the node's operator names it); nothing inside it is.

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

    @contextlib.contextmanager
    def _root(self) -> Iterator[int]:
        """The node directory's descriptor: its own files are opened relative to it."""
        try:
            descriptor = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise RequestError(
                f"{self.path}: cannot open the node directory ({_why(err)})"
            ) from None
        try:
            yield descriptor
        finally:
            os.close(descriptor)

    # ------------------------------------------------------------------ the ledger
    def ledger(self) -> list[dict[str, Any]]:
        """The carried-out requests, oldest first.

        Raises
        ------
        RequestError
            If the ledger cannot be trusted (see the module docstring): a node must not train
            while it cannot tell which samples were deleted.
        """
        with self._root() as root:
            return self._ledger_at(root)

    def _ledger_at(self, root: int) -> list[dict[str, Any]]:
        path = self.path / LEDGER_FILE
        try:
            if _kind(root, LEDGER_FILE) is None and _kind(root, LEDGER_COPY_FILE) is None:
                return []  # a node that never carried out a deletion
            text = _read_regular(root, LEDGER_FILE, MAX_LEDGER_BYTES)
            entries = _checked_ledger(text, self.data)
        except FileNotFoundError:
            copy = self.path / LEDGER_COPY_FILE
            raise RequestError(
                f"{path}: missing, but this node has recorded deletions (kept in {copy}); it "
                f"does not train until the ledger is restored (cp {copy} {path})"
            ) from None
        except (RequestError, OSError) as err:
            raise RequestError(f"{path}: not a deletion ledger ({_why(err)})") from None
        lost = sorted(self._copy_ids(root) - {entry["id"] for entry in entries})
        if lost:
            raise RequestError(
                f"{path}: not a deletion ledger (it lacks request {lost[0]}, which this node "
                f"carried out and kept in {LEDGER_COPY_FILE}; an older ledger would let deleted "
                "samples back)"
            )
        return entries

    def _copy_ids(self, root: int) -> set[str]:
        """The request ids of the ledger's copy (empty when there is none or it is unusable:
        the ledger, checked on its own, is then the record, and the copy is rewritten)."""
        try:
            if _kind(root, LEDGER_COPY_FILE) is None:
                return set()
            text = _read_regular(root, LEDGER_COPY_FILE, MAX_LEDGER_BYTES)
            return {entry["id"] for entry in _checked_ledger(text, self.data)}
        except (RequestError, OSError) as err:
            log.warning("%s is not usable (%s); it is rewritten", LEDGER_COPY_FILE, _why(err))
            return set()

    def _sync_copy(self, root: int, entries: list[dict[str, Any]]) -> None:
        """Write the ledger's copy when it lacks what the ledger holds (under the lock)."""
        if not entries or self._copy_ids(root) == {entry["id"] for entry in entries}:
            return
        try:
            _atomic_json(root, LEDGER_COPY_FILE, {LEDGER_KEY: entries})
        except OSError as err:
            log.warning("%s could not be written: %s", LEDGER_COPY_FILE, _why(err))

    def deleted_ids(self) -> np.ndarray:
        """Row ids deleted for good (every request in the ledger)."""
        return _deleted_in(self.ledger())

    def carry_out(
        self, requests: list[DeletionRequest], server_round: int, run_id: int | str
    ) -> int:
        """Record ``requests`` as carried out; returns how many samples left the data.

        Under the node's lock the ledger is re-read, extended and written to disk (fsynced),
        then its copy, before any request file is removed, so a crash or a concurrent writer
        can never lose a carried-out deletion.
        """
        with self.locked(), self._root() as root:
            ledger = self._ledger_at(root)
            done = {entry["id"] for entry in ledger}
            fresh = list({r.id: r for r in requests if r.id not in done}.values())
            now = datetime.now(UTC).isoformat(timespec="seconds")
            entries = ledger + [
                {**request.to_json(), "round": server_round, "run": str(run_id), "time": now}
                for request in fresh
            ]
            if fresh:
                _atomic_json(root, LEDGER_FILE, {LEDGER_KEY: entries})
            self._sync_copy(root, entries)
            with _request_folder(root, self.path) as folder:
                for request in requests if folder is not None else []:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{request.id}.json", dir_fd=folder)
        return len({s for r in fresh for s in r.samples})

    # ------------------------------------------------------------------ requests
    def pending(self) -> list[DeletionRequest]:
        """Valid requests not yet carried out; anything else moves to ``requests/rejected``.

        Raises
        ------
        RequestError
            For a ledger that cannot be trusted, or a ``requests`` that is a symbolic link (a
            request behind it must not be ignored without a word).
        """
        with self.locked(), self._root() as root:
            ledger = self._ledger_at(root)
            self._sync_copy(root, ledger)  # a ledger written before the copy existed
            done = {entry["id"] for entry in ledger}
            deleted = set(_deleted_in(ledger).tolist())
            with _request_folder(root, self.path) as folder:
                if folder is None:
                    return []
                return self._read_requests(folder, done, deleted)

    def _read_requests(self, folder: int, done: set[str], deleted: set[int]) -> list:
        requests: dict[str, DeletionRequest] = {}
        try:
            names = sorted(name for name in os.listdir(folder) if name.endswith(".json"))
        except OSError as err:
            raise RequestError(f"{self.path / REQUESTS_DIR}: cannot list ({_why(err)})") from None
        for name in names:
            try:
                request = parse_request(_read_regular(folder, name, MAX_REQUEST_BYTES), self.data)
            except FileNotFoundError:  # carried out meanwhile by another process
                continue
            except (RequestError, OSError) as err:
                self._reject(folder, name, _why(err))
                continue
            if request.id in done or set(request.samples) <= deleted:
                self._reject(folder, name, "every sample of this request is already deleted")
            else:
                requests.setdefault(request.id, request)
        return list(requests.values())

    def _reject(self, folder: int, name: str, reason: str) -> None:
        """Move ``name`` (the entry itself, never a link's target) to ``rejected/``."""
        try:
            with _rejected_folder(folder, self.path) as rejected:
                _move_aside(folder, name, rejected, reason)
        except FileNotFoundError:
            return
        except OSError as err:  # e.g. a folder that cannot be moved: leave it, say why
            log.warning("deletion request %s could not be moved aside: %s", name, _why(err))
            return
        log.warning("deletion request %s rejected: %s", name, reason)

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
        For malformed or too deeply nested JSON, unknown keys, ids the node does not hold,
        classes it holds no sample of, or a request whose every sample is already deleted.
    """
    raw = _json(text)
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


def _json(text: str) -> Any:
    """Parsed JSON, or :class:`RequestError` with one line (deep nesting included)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise RequestError(f"not JSON ({err.msg} at line {err.lineno})") from None
    except RecursionError:
        raise RequestError("JSON nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise RequestError(f"not usable JSON ({_why(err)})") from None


def _int_list(value: Any, name: str) -> list[int]:
    if not isinstance(value, list) or not all(type(v) is int for v in value):
        raise RequestError(f'"{name}" must be a list of integers')
    return list(value)


def _checked_ledger(text: str, data: ArrayDataset) -> list[dict[str, Any]]:
    """The ledger's entries, after checking each against the node's data (see the module)."""
    raw = _json(text)
    if (
        not isinstance(raw, dict)
        or set(raw) != {LEDGER_KEY}
        or not isinstance(raw[LEDGER_KEY], list)
    ):
        raise RequestError(f'expected {{"{LEDGER_KEY}": [...]}}')
    seen: set[str] = set()
    for index, entry in enumerate(raw[LEDGER_KEY]):
        problem = _entry_problem(entry, data)
        if problem is None and entry["id"] in seen:
            problem = f"request {entry['id']} recorded twice"
        if problem is not None:
            raise RequestError(f"entry {index}: {problem}")
        seen.add(entry["id"])
    return list(raw[LEDGER_KEY])


def _entry_problem(entry: Any, data: ArrayDataset) -> str | None:
    """What is wrong with one ledger entry (``None``: nothing)."""
    if not isinstance(entry, dict):
        return "not an object"
    unknown = set(entry) - LEDGER_KEYS
    if unknown:
        return f"unknown key(s) {sorted(unknown)}"
    samples, classes = entry.get("samples"), entry.get("classes", [])
    if not isinstance(entry.get("id"), str):
        return 'no request "id"'
    if not isinstance(samples, list) or not samples or not all(type(s) is int for s in samples):
        return '"samples" must be a non-empty list of integers'
    if not 0 <= min(samples) <= max(samples) < len(data):
        outside = min(samples) if min(samples) < 0 else max(samples)
        return f"sample id {outside} is not a row of {DATA_FILE} (0-{len(data) - 1})"
    ids = np.asarray(samples, dtype=np.int64)
    if np.any(np.diff(ids) <= 0):
        return "sample ids are not sorted and distinct"
    if entry["id"] != request_id(ids):
        return f"request id {entry['id']} does not match its samples"
    if not isinstance(classes, list) or not all(type(c) is int for c in classes):
        return '"classes" must be a list of integers'
    if classes and not np.array_equal(np.flatnonzero(np.isin(data.y, classes)), ids):
        return f"its samples are not exactly the rows of class(es) {sorted(set(classes))}"
    if "round" in entry and type(entry["round"]) is not int:
        return '"round" must be an integer'
    if not all(isinstance(entry.get(key, ""), str) for key in ("run", "time")):
        return '"run" and "time" must be text'
    return None


def _deleted_in(ledger: list[dict[str, Any]]) -> np.ndarray:
    ids = [np.asarray(entry["samples"], dtype=np.int64) for entry in ledger]
    return np.unique(np.concatenate(ids)) if ids else np.empty(0, dtype=np.int64)


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
        For ids or classes the node does not hold, a request naming nothing, a ledger that
        cannot be trusted, or a ``requests`` that is not a real folder.
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
    name = f"{request.id}.json"
    path = node.path / REQUESTS_DIR / name
    with node.locked(), node._root() as root:
        done = {entry["id"] for entry in node._ledger_at(root)}
        with _request_folder(root, node.path, create=True) as folder:
            if request.id in done or _already_filed(folder, name, request, node.data):
                return request, path, False
            kind = _kind(folder, name)
            if kind not in (None, "file"):
                raise RequestError(f"{path}: a {kind} stands where the request file goes")
            filed = {**request.to_json(), "filed": datetime.now(UTC).isoformat(timespec="seconds")}
            _atomic_json(folder, name, filed)
    return request, path, True


def _already_filed(folder: int, name: str, request: DeletionRequest, data: ArrayDataset) -> bool:
    """Whether ``name`` already holds ``request`` (a broken file of that name is replaced)."""
    try:
        return parse_request(_read_regular(folder, name, MAX_REQUEST_BYTES), data) == request
    except (RequestError, OSError):
        return False


def own_folder(root: Path | str, *parts: str) -> Path:
    """``root/parts...`` as real folders, created where missing, never through a link.

    Raises
    ------
    RequestError
        When one of ``parts`` exists but is not a folder (a symbolic link, a file): the node
        writes nothing outside its own directory.
    """
    descriptor = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for index, part in enumerate(parts):
            kind = _kind(descriptor, part)
            if kind is None:
                with contextlib.suppress(FileExistsError):
                    os.mkdir(part, 0o755, dir_fd=descriptor)
            elif kind != "folder":
                where = Path(root, *parts[: index + 1])
                raise RequestError(f"{where}: a {kind}, not a folder of this node")
            inner = os.open(part, _DIR_FLAGS, dir_fd=descriptor)
            os.close(descriptor)
            descriptor = inner
    finally:
        os.close(descriptor)
    return Path(root, *parts)


# ---------------------------------------------------------------------- safe file access
def _kind(folder: int, name: str) -> str | None:
    """What ``name`` in ``folder`` is, from ``lstat`` (``None``: nothing of that name)."""
    try:
        mode = os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(mode):
        return "symbolic link"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special file"


def _read_regular(folder: int, name: str, limit: int) -> str:
    """The UTF-8 text of the regular file ``name`` in ``folder``, at most ``limit`` bytes.

    Anything else is refused from ``lstat`` before it is opened (a FIFO would block, a
    device might never end), and the descriptor is checked again after the open, which
    never follows a symbolic link.

    Raises
    ------
    RequestError
        For a link, a non-regular file, a file above ``limit`` or text that is not UTF-8.
    FileNotFoundError
        When ``name`` is gone.
    """
    kind = _kind(folder, name)
    if kind is None:
        raise FileNotFoundError(name)
    if kind != "file":
        raise RequestError(f"a {kind}, not a regular file")
    try:
        descriptor = os.open(name, _READ_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        raise
    except OSError as err:
        raise RequestError(f"cannot be read ({_why(err)})") from None
    with os.fdopen(descriptor, "rb") as handle:
        info = os.fstat(handle.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise RequestError("not a regular file")
        if info.st_size > limit:
            raise RequestError(f"larger than {limit} bytes")
        content = handle.read(limit + 1)
    if len(content) > limit:
        raise RequestError(f"larger than {limit} bytes")
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        raise RequestError("not UTF-8 text") from None


@contextlib.contextmanager
def _request_folder(root: int, node_path: Path, create: bool = False) -> Iterator[int | None]:
    """The ``requests`` folder's descriptor (``None``: absent, or a plain file: nothing pending).

    Raises
    ------
    RequestError
        For a symbolic link (fails closed: a request behind it must not be ignored), or,
        with ``create``, anything that is not a folder.
    """
    where = node_path / REQUESTS_DIR
    kind = _kind(root, REQUESTS_DIR)
    if kind == "symbolic link":
        raise RequestError(
            f"{where} is a symbolic link: the node reads deletion requests only from a real "
            "folder in its node directory, and does not train while one may be hidden; "
            "replace the link by the folder itself"
        )
    if kind not in (None, "folder"):
        if create:
            raise RequestError(f"{where}: expected a folder of deletion requests, found a {kind}")
        log.warning("%s is a %s, not a folder: no deletion request is read", where, kind)
        yield None
        return
    if kind is None and not create:
        yield None
        return
    try:
        if kind is None:
            with contextlib.suppress(FileExistsError):
                os.mkdir(REQUESTS_DIR, 0o755, dir_fd=root)
        descriptor = os.open(REQUESTS_DIR, _DIR_FLAGS, dir_fd=root)
    except OSError as err:
        raise RequestError(f"{where}: cannot open the folder of requests ({_why(err)})") from None
    try:
        yield descriptor
    finally:
        os.close(descriptor)


@contextlib.contextmanager
def _rejected_folder(requests: int, node_path: Path) -> Iterator[int]:
    """``requests/rejected``'s descriptor; created, or made a real folder first.

    An entry named ``rejected`` that is not a folder (a file, a symbolic link, a FIFO) would
    make every rejection fail or write through the link: it is renamed aside, a real folder
    takes its name, and the entry is moved into it with its reason, its target untouched.
    """
    kind = _kind(requests, REJECTED_DIR)
    aside = None
    if kind not in (None, "folder"):
        aside = f".{REJECTED_DIR}-{uuid.uuid4().hex[:12]}"
        os.rename(REJECTED_DIR, aside, src_dir_fd=requests, dst_dir_fd=requests)
    if kind != "folder":
        with contextlib.suppress(FileExistsError):
            os.mkdir(REJECTED_DIR, 0o755, dir_fd=requests)
    descriptor = os.open(REJECTED_DIR, _DIR_FLAGS, dir_fd=requests)
    try:
        if aside is not None:
            reason = (
                f"a {kind} named {REJECTED_DIR} stood where the node keeps rejected requests "
                f"({node_path / REQUESTS_DIR / REJECTED_DIR}); moved here, a link's target "
                "untouched"
            )
            _move_aside(requests, aside, descriptor, reason, name=REJECTED_DIR)
            log.warning("%s", reason)
        yield descriptor
    finally:
        os.close(descriptor)


def _move_aside(
    folder: int, entry: str, rejected: int, reason: str, name: str | None = None
) -> None:
    """Rename ``entry`` into ``rejected`` under a free name, with ``<stem>.error`` beside it."""
    target, error = _free_names(rejected, name or entry)
    os.rename(entry, target, src_dir_fd=folder, dst_dir_fd=rejected)
    descriptor = os.open(error, _NEW_FILE_FLAGS, 0o644, dir_fd=rejected)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(reason + "\n")


def _free_names(folder: int, name: str) -> tuple[str, str]:
    """``name`` and ``<stem>.error``, or both with a counter when either is taken."""
    stem, suffix = Path(name).stem, Path(name).suffix
    for counter in range(FREE_NAME_TRIES):
        candidate = name if counter == 0 else f"{stem}-{counter}{suffix}"
        error = f"{Path(candidate).stem}.error"
        if _kind(folder, candidate) is None and _kind(folder, error) is None:
            return candidate, error
    unique = f"{stem}-{uuid.uuid4().hex[:12]}"
    return f"{unique}{suffix}", f"{unique}.error"


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if missing), released on exit."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise RequestError(f"{path}: cannot take the node's lock ({_why(err)})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(descriptor, fcntl.LOCK_UN)
        os.close(descriptor)


def _atomic_json(folder: int, name: str, value: Any) -> None:
    """Write JSON durably into ``folder`` through a uniquely named temporary file and a rename.

    A reader never sees half a file, two writers never share a temporary file, the rename
    replaces ``name`` itself (a symbolic link of that name, never its target), and the
    content and the rename are on disk when this returns.
    """
    tmp = f".{name}.{uuid.uuid4().hex}.tmp"
    descriptor = os.open(tmp, _NEW_FILE_FLAGS, 0o644, dir_fd=folder)
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(json.dumps(value, indent=2) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, name, src_dir_fd=folder, dst_dir_fd=folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=folder)
        raise
    os.fsync(folder)


def _why(err: BaseException) -> str:
    """One line saying what went wrong."""
    if isinstance(err, OSError) and err.strerror:
        return err.strerror
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
