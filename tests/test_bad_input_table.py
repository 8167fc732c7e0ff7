"""Bad input never reaches Ray: one row per input, each one line on stderr and exit code 2.

Every row runs the real command line (``fedforget.cli.main``) in a folder that holds the
user's files, with three guards around it: the simulation engine is replaced by a stand-in
that fails the row if it is ever started (the input was not refused before Ray), a hang
guard (a FIFO read blocks forever) and a memory guard (labels of 10**9 once built a set of a
billion classes). Afterwards nothing in the folder may have changed or been added.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import os
import resource
import signal
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from fedforget.cli import main

HANG_LIMIT_S = 120
"""A row still running after this long is hanging (the slowest refusal here, on a loaded
2-core machine, takes seconds); the guard only turns a hang into a failure."""
MEMORY_HEADROOM = 2 * 2**30
"""Bytes a row may allocate beyond what the process held before it (a refusal needs MBs)."""

DIGITS = ["--dataset", "digits", "--clients", "4", "--rounds", "3", "--deletion-round", "2"]
SIMULATE = ["simulate", *DIGITS, "--quiet"]
SWEEP_ONE_CELL = ["sweep", *DIGITS, "--quiet", "--scenarios", "backdoor-6%", "--partitions", "iid"]
SPD = ["verify", "spd", "--dataset", "digits", "--forget-class", "3"]
HUGE = "100000000000000000000"  # 1e20, written as the integer a size option takes


class ReachedRayError(BaseException):
    """The command started the simulation engine: the input was not refused before Ray."""


class HangError(BaseException):
    """The command ran past :data:`HANG_LIMIT_S` (it blocked, or would run without end)."""


# -- the user's files -------------------------------------------------------------------------


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def _images(path: Path, y_train: np.ndarray | None = None, side: tuple[int, int] = (8, 8)) -> str:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, *side), dtype=np.uint8)
    y = np.arange(40) % 10
    path.write_bytes(
        _npz_bytes(x_train=x, y_train=y if y_train is None else y_train, x_test=x, y_test=y)
    )
    return str(path)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The user's folder: special files, hostile configurations and data, a node, a model."""
    import torch

    from fedforget.data import ArrayDataset
    from fedforget.models import build_model
    from fedforget.node import write_node_data

    monkeypatch.chdir(tmp_path)
    for name in ("fifo.toml", "fifo.json", "fifo.pt", "fifo.npz"):
        os.mkfifo(tmp_path / name)
    deep = 100_000
    (tmp_path / "deep.json").write_text("[" * deep + "]" * deep)
    (tmp_path / "deep.toml").write_text("a = " + "[" * deep + "]" * deep + "\n")
    (tmp_path / "plugin.toml").write_text('plugins = ["no_such_plugin_module_xyz"]\n')
    (tmp_path / "wrong-type.toml").write_text('[train]\nrounds = "many"\n')
    (tmp_path / "text.npz").write_text("these are not arrays\n")
    np.save(tmp_path / "images.npy", np.zeros((4, 1, 8, 8)))
    labels = np.arange(40) % 10
    labels[0] = 10**9
    torch.manual_seed(0)
    torch.save(build_model("lenet5", 10, 1, 8).state_dict(), tmp_path / "model.pt")
    (tmp_path / "a-file").write_text("not a folder\n")
    rng = np.random.default_rng(0)
    images = rng.random((12, 1, 4, 4), dtype=np.float32)
    write_node_data(tmp_path / "node", ArrayDataset(images, np.arange(12, dtype=np.int64) % 3))
    return {
        "root": str(tmp_path),
        "fifo": str(tmp_path / "fifo.toml"),
        "fifo-json": str(tmp_path / "fifo.json"),
        "fifo-model": str(tmp_path / "fifo.pt"),
        "fifo-npz": str(tmp_path / "fifo.npz"),
        "deep-json": str(tmp_path / "deep.json"),
        "deep-toml": str(tmp_path / "deep.toml"),
        "plugin": str(tmp_path / "plugin.toml"),
        "wrong-type": str(tmp_path / "wrong-type.toml"),
        "text-npz": str(tmp_path / "text.npz"),
        "npy": str(tmp_path / "images.npy"),
        "labels-1e9": _images(tmp_path / "labels.npz", y_train=labels),
        "good-npz": _images(tmp_path / "good.npz"),
        "8x6": _images(tmp_path / "8x6.npz", side=(8, 6)),
        "2x2": _images(tmp_path / "2x2.npz", side=(2, 2)),
        "model": str(tmp_path / "model.pt"),
        "file": str(tmp_path / "a-file"),
        "node": str(tmp_path / "node"),
        "missing": str(tmp_path / "no-such-data.npz"),
    }


def _denied(target: str) -> Callable[[dict[str, str], pytest.MonkeyPatch], None]:
    """The operating system refuses to write (as for a user without the permission)."""

    def prepare(w: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
        module, _, name = target.rpartition(".")

        def refuse(*args: object, **kwargs: object) -> None:
            raise PermissionError(13, "Permission denied", os.path.join(w["root"], "locked"))

        monkeypatch.setattr(importlib.import_module(module), name, refuse)

    return prepare


def _npz(path_key: str) -> Callable[[dict[str, str]], list[str]]:
    return lambda w: [*SIMULATE, "--dataset", "npz", "--data-path", w[path_key]]


Row = tuple[str, Callable[[dict[str, str]], list[str]], str, object]
ROWS: list[Row] = [
    # memory: labels and class counts are checked before anything they size is allocated
    ("labels reach 1e9", _npz("labels-1e9"), "beyond 100,000 classes", None),
    (
        "num-classes 1e20",
        lambda w: [*_npz("good-npz")(w), "--num-classes", "99999999999999999999"],
        "num_classes",
        None,
    ),
    # hangs: a client that Ray can never place, a FIFO where a file is expected, endless epochs
    ("client-cpus 1000", lambda w: [*SIMULATE, "--client-cpus", "1000"], "--client-cpus", None),
    ("config is a FIFO", lambda w: [*SIMULATE, "--config", w["fifo"]], "not a regular file", None),
    (
        "verify model is a FIFO",
        lambda w: [*SPD, "--model", w["fifo-model"], "--reference", w["model"]],
        "not a regular file",
        None,
    ),
    (
        "samples is a FIFO",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--samples", w["fifo-json"]],
        "not a regular file",
        None,
    ),
    ("data path is a FIFO", _npz("fifo-npz"), "not a regular file", None),
    ("unlearn-epochs 1e20", lambda w: [*SIMULATE, "--unlearn-epochs", HUGE], "epochs", None),
    # tracebacks from Ray, each now one line before Ray starts
    ("lr inf", lambda w: [*SIMULATE, "--lr", "inf"], "train.lr", None),
    ("seed 2**63", lambda w: [*SIMULATE, "--seed", str(2**63)], "seed", None),
    ("seed -1", lambda w: [*SIMULATE, "--seed", "-1"], "seed", None),
    (
        "sweep seeds 1e20",
        lambda w: [*SWEEP_ONE_CELL, "--seeds", "99999999999999999999"],
        "seed",
        None,
    ),
    ("timeout 1e-9", lambda w: [*SIMULATE, "--timeout", "1e-9"], "message_timeout", None),
    (
        "plugin module missing",
        lambda w: [*SIMULATE, "--config", w["plugin"]],
        "no_such_plugin_module_xyz",
        None,
    ),
    ("data path is a .npy", _npz("npy"), "not an .npz archive", None),
    ("config JSON nested deep", lambda w: [*SIMULATE, "--config", w["deep-json"]], "nested", None),
    ("config TOML nested deep", lambda w: [*SIMULATE, "--config", w["deep-toml"]], "nested", None),
    (
        "samples JSON nested deep",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--samples", w["deep-json"]],
        "nested",
        None,
    ),
    # nonsense that used to run
    ("lr 1e30", lambda w: [*SIMULATE, "--lr", "1e30"], "train.lr", None),
    (
        "alpha 1e-300",
        lambda w: [*SIMULATE, "--partition", "dirichlet", "--alpha", "1e-300"],
        "data.alpha",
        None,
    ),
    ("batch-size 1e20", lambda w: [*SIMULATE, "--batch-size", HUGE], "batch_size", None),
    ("max-hops 1e20", lambda w: [*SIMULATE, "--max-hops", HUGE], "max_hops", None),
    ("verify-clients 1e20", lambda w: [*SIMULATE, "--verify-clients", HUGE], "verify", None),
    (
        "retain-per-client 1e20",
        lambda w: [*SIMULATE, "--retain-per-client", HUGE],
        "retain_per_client",
        None,
    ),
    ("gan-clients 1e20", lambda w: [*SIMULATE, "--gan-clients", HUGE], "generator_clients", None),
    (
        "fraction-train samples no client",
        lambda w: [*SIMULATE, "--fraction-train", "0.01"],
        "fraction_train",
        None,
    ),
    (
        "run-config missing data path",
        lambda w: ["run-config", "--dataset", "npz", "--data-path", w["missing"]],
        "no-such-data.npz",
        None,
    ),
    (
        "run-config npz without a path",
        lambda w: ["run-config", "--dataset", "npz"],
        "needs a path",
        None,
    ),
    (
        "run-config out is a file",
        lambda w: ["run-config", "--out", w["file"]],
        "not a folder",
        None,
    ),
    (
        "run-config forget class beyond the data",
        lambda w: ["run-config", "--dataset", "digits", "--mode", "class", "--forget-class", "12"],
        "forget class 12",
        None,
    ),
    (
        "config wrong type, option overrides it",
        lambda w: [*SIMULATE, "--config", w["wrong-type"], "--rounds", "3"],
        "train.rounds",
        None,
    ),
    (
        "data mnist permission",
        lambda w: ["data", "mnist", "--data-dir", os.path.join(w["root"], "cache")],
        "permission denied",
        _denied("fedforget.data.fetch_mnist"),
    ),
    (
        "request-deletion permission",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--sample-ids", "1"],
        "permission denied",
        _denied("fedforget.node.file_request"),
    ),
    # data problems said in one line, without advice to unpickle
    ("text named .npz", _npz("text-npz"), "not an .npz archive", None),
    ("images 8x6", _npz("8x6"), "square", None),
    ("images too small for the model", _npz("2x2"), "cannot take the data's 1x2x2 images", None),
]


# -- the guards -------------------------------------------------------------------------------


@pytest.fixture
def no_simulation(monkeypatch: pytest.MonkeyPatch) -> None:
    """Starting Flower's simulation engine (and with it Ray) fails the row at once."""
    from fedforget.simulations import runner

    def reached_ray(*args: object, **kwargs: object) -> None:
        raise ReachedRayError("the input reached the simulation engine")

    monkeypatch.setattr(runner, "run_simulation", reached_ray)


@contextlib.contextmanager
def hang_guard() -> Iterator[None]:
    """A command still running after :data:`HANG_LIMIT_S` raises :class:`HangError`."""

    def hung(signum: int, frame: object) -> None:
        raise HangError(f"still running after {HANG_LIMIT_S} s")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(HANG_LIMIT_S)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.contextmanager
def memory_guard() -> Iterator[None]:
    """Allocations beyond :data:`MEMORY_HEADROOM` fail with MemoryError (Linux: RLIMIT_DATA)."""
    if not sys.platform.startswith("linux"):
        yield
        return
    held = _data_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    limit = held + MEMORY_HEADROOM
    resource.setrlimit(resource.RLIMIT_DATA, (limit if hard < 0 else min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))


def _data_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmData:"):
            return int(line.split()[1]) * 1024
    return 0


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.mark.parametrize(("name", "args", "fragment", "prepare"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_exit_2_before_ray(
    world, no_simulation, monkeypatch, capsys, tmp_path, name, args, fragment, prepare
) -> None:
    if prepare is not None:
        prepare(world, monkeypatch)
    command = args(world)
    before = _snapshot(tmp_path)
    with hang_guard(), memory_guard(), pytest.raises(SystemExit) as info:
        main(command)
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert "[Errno" not in captured.err and "allow_pickle" not in captured.err, captured.err
    assert fragment.lower() in captured.err.lower(), captured.err
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed or gone
    assert [k for k in after if k not in before] == []  # nothing written


SIMULATE_ROWS = [row for row in ROWS if row[1](defaultdict(str))[0] == "simulate"]
"""The rows whose command is ``simulate`` (the paths they name do not matter for that)."""


@pytest.mark.parametrize(
    ("name", "args", "fragment", "prepare"), SIMULATE_ROWS, ids=[r[0] for r in SIMULATE_ROWS]
)
def test_run_config_refuses_what_simulate_refuses(
    world, no_simulation, monkeypatch, capsys, name, args, fragment, prepare
) -> None:
    """Every ``simulate`` row, given to ``run-config``: the same one line and exit code 2.

    ``run-config`` prints the configuration of a deployment's run; a value it let through
    would fail there, on the SuperLink, after the run was submitted.
    """
    if prepare is not None:
        prepare(world, monkeypatch)
    command = args(world)
    command = ["run-config", *(arg for arg in command[1:] if arg != "--quiet")]
    with hang_guard(), memory_guard(), pytest.raises(SystemExit) as info:
        main(command)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, (command, err)
    assert fragment.lower() in err.lower(), (command, err)
