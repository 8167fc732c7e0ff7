"""Every subcommand with bad inputs: exit code 2, one line on stderr, no traceback, no harm.

Each case runs the real command line (``fedforget.cli.main``) in a folder that already holds
an earlier run, a node directory and input files; afterwards every one of those files must
be byte-for-byte what it was.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fedforget.cli import main
from fedforget.data import ArrayDataset
from fedforget.node import LEDGER_FILE, REQUESTS_DIR, write_node_data

DIGITS = ["--dataset", "digits", "--clients", "4", "--rounds", "3", "--deletion-round", "2"]
SIMULATE = ["simulate", *DIGITS, "--quiet"]


def _digits_images(path: Path, x: np.ndarray | None = None, y: np.ndarray | None = None) -> str:
    rng = np.random.default_rng(0)
    images = rng.random((8, 1, 8, 8), dtype=np.float32) if x is None else x
    labels = np.arange(8, dtype=np.int64) % 10 if y is None else y
    np.savez(path, x=images, y=labels)
    return str(path)


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Files a user already has: a run, a node, models and inputs (paths by name)."""
    import torch

    from fedforget.models import build_model

    monkeypatch.chdir(tmp_path)
    run = tmp_path / "earlier-run"
    run.mkdir()
    (run / "summary.json").write_text('{"strategy": "distill"}\n')
    (run / "rounds.jsonl").write_text('{"round": 1}\n')
    (run / "model.pt").write_bytes(b"weights")
    torch.manual_seed(0)
    torch.save(build_model("lenet5", 10, 1, 8).state_dict(), tmp_path / "model.pt")
    rng = np.random.default_rng(0)
    node = tmp_path / "node"
    images = rng.random((12, 1, 4, 4), dtype=np.float32)
    write_node_data(node, ArrayDataset(images, np.arange(12, dtype=np.int64) % 3))
    (tmp_path / "a-file").write_text("not a folder\n")
    (tmp_path / "latin.json").write_bytes(b"[1, 2] \xe9")
    np.save(tmp_path / "images.npy", rng.random((4, 1, 8, 8)))
    labels = np.full(8, 99, dtype=np.int64)
    return {
        "run": str(run),
        "node": str(node),
        "model": str(tmp_path / "model.pt"),
        "file": str(tmp_path / "a-file"),
        "under_file": str(tmp_path / "a-file" / "sub"),
        "latin": str(tmp_path / "latin.json"),
        "npy": str(tmp_path / "images.npy"),
        "label99": _digits_images(tmp_path / "label99.npz", y=labels),
        "label-1": _digits_images(tmp_path / "label-1.npz", y=-labels // 99),
        "nan": _digits_images(tmp_path / "nan.npz", x=np.full((8, 1, 8, 8), np.nan, np.float32)),
        "255": _digits_images(tmp_path / "255.npz", x=np.full((8, 1, 8, 8), 255.0, np.float32)),
        "shape": _digits_images(tmp_path / "shape.npz", x=np.zeros((8, 1, 4, 4), np.float32)),
        "mnist-cache": str(_corrupt_mnist_cache(tmp_path / "cache")),
        "toml-syntax": _text(tmp_path / "syntax.toml", "[deletion\nround = 2\n"),
        "toml-key": _text(tmp_path / "key.toml", "[train]\nrounds = 3\nepochz = 2\n"),
        "toml-value": _text(tmp_path / "value.toml", "[deletion]\nmode = 'erase'\n"),
        "toml-list": _text(tmp_path / "list.json", "[1, 2]\n"),
        "three-clients": str(_client_files(tmp_path / "three-clients", 3)),
        "stray-label": _stray_label(tmp_path / "stray.npz"),
    }


def _stray_label(path: Path) -> str:
    """Ten classes of 8x8 images, and one training label 12."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 10
    np.savez(path, x_train=x, y_train=np.where(np.arange(40) == 5, 12, y), x_test=x, y_test=y)
    return str(path)


def _text(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _client_files(folder: Path, clients: int) -> Path:
    """A custom-data folder: ``clients`` client_*.npz files and test.npz."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    for name in [f"client_{i}" for i in range(clients)] + ["test"]:
        x = rng.integers(0, 256, (12, 8, 8), dtype=np.uint8)
        np.savez(folder / f"{name}.npz", x=x, y=np.arange(12) % 4)
    return folder


def _corrupt_mnist_cache(folder: Path) -> Path:
    folder.mkdir()
    (folder / "mnist.npz").write_bytes(b"PK\x03\x04 truncated")
    return folder


def _verify(kind: str) -> Callable[[dict[str, str]], list[str]]:
    def args(w: dict[str, str]) -> list[str]:
        return [
            "verify",
            kind,
            "--dataset",
            "digits",
            "--model",
            w["model"],
            "--reference",
            w["model"],
        ]

    return args


def FOLDER(w: dict[str, str]) -> list[str]:  # noqa: N802 - reads like SIMULATE
    """simulate on the custom-data folder of three client files."""
    data = ["--dataset", "npz", "--data-path", w["three-clients"]]
    return ["simulate", *data, "--rounds", "3", "--deletion-round", "2", "--quiet"]


SPD = _verify("spd")
SKYEYE = _verify("skyeye")


def _ledger(content: bytes) -> Callable[[dict[str, str]], None]:
    def prepare(w: dict[str, str]) -> None:
        (Path(w["node"]) / LEDGER_FILE).write_bytes(content)

    return prepare


def _requests_is_a_file(w: dict[str, str]) -> None:
    (Path(w["node"]) / REQUESTS_DIR).write_text("not a folder\n")


# (case id, arguments from the world, expected fragment of the message, preparation)
CASES: list[tuple[str, Callable[[dict[str, str]], list[str]], str, object]] = [
    ("no command", lambda w: [], "missing command", None),
    ("data without command", lambda w: ["data"], "missing command", None),
    ("verify without command", lambda w: ["verify"], "missing command", None),
    ("unknown command", lambda w: ["erase"], "No such command", None),
    ("out is a file", lambda w: [*SIMULATE, "--out", w["file"]], "not a folder", None),
    ("out under a file", lambda w: [*SIMULATE, "--out", w["under_file"]], "cannot write", None),
    ("out holds a run", lambda w: [*SIMULATE, "--out", w["run"]], "holds an earlier run", None),
    ("server device", lambda w: [*SIMULATE, "--server-device", "bogus"], "server_device", None),
    ("unknown attack", lambda w: [*SIMULATE, "--mia", "oracle"], "membership attack", None),
    ("absent gpu", lambda w: [*SIMULATE, "--server-device", "cuda:99"], "cuda:99", None),
    ("data dir is a file", lambda w: ["simulate", "--data-dir", w["file"]], "not a folder", None),
    ("backdoor class", lambda w: [*SIMULATE, "--forget-class", "3"], "--mode class", None),
    ("timeout", lambda w: ["run-config", "--timeout", "-1"], "message_timeout", None),
    ("timeout nan", lambda w: ["run-config", "--timeout", "nan"], "message_timeout", None),
    ("rc dataset", lambda w: ["run-config", "--dataset", "imagenet"], "unknown dataset", None),
    ("rc strategy", lambda w: ["run-config", "--strategy", "magic"], "unknown strategy", None),
    ("rc model", lambda w: ["run-config", "--model", "vgg99"], "unknown model", None),
    ("rc option", lambda w: ["run-config", "--option", "noequals"], "NAME.KEY=VALUE", None),
    ("rc option key", lambda w: ["run-config", "--option", "lau.no_such=1"], "no_such", None),
    (
        "rc client nad",
        lambda w: ["run-config", "--unlearn-on", "client", "--strategy", "nad"],
        "nad",
        None,
    ),
    ("config absent", lambda w: [*SIMULATE, "--config", "no.toml"], "--config no.toml", None),
    ("config syntax", lambda w: [*SIMULATE, "--config", w["toml-syntax"]], "valid TOML", None),
    ("config key", lambda w: [*SIMULATE, "--config", w["toml-key"]], "train.epochz", None),
    ("config value", lambda w: [*SIMULATE, "--config", w["toml-value"]], "deletion.mode", None),
    ("config list", lambda w: ["run-config", "--config", w["toml-list"]], "a table", None),
    ("config folder", lambda w: ["compare", "--config", w["node"]], "--config", None),
    (
        "clients vs files",
        lambda w: [*FOLDER(w), "--clients", "4"],
        "brings 3 client datasets but --clients is 4",
        None,
    ),
    (
        "stray label",
        lambda w: [*SIMULATE, "--dataset", "npz", "--data-path", w["stray-label"]],
        "no sample has label 10, 11, yet label 12 makes 13 classes",
        None,
    ),
    (
        "label beyond classes",
        lambda w: [
            *SIMULATE,
            "--dataset",
            "npz",
            "--data-path",
            w["stray-label"],
            "--num-classes",
            "10",
        ],
        "y_train: label 12 is out of range for num_classes=10",
        None,
    ),
    (
        "folder label beyond classes",
        lambda w: [*FOLDER(w), "--num-classes", "3"],
        "client_0.npz y: label 3 is out of range for num_classes=3",
        None,
    ),
    (
        "num classes builtin",
        lambda w: [*SIMULATE, "--num-classes", "10"],
        "num_classes",
        None,
    ),
    ("compare none", lambda w: ["compare", "--strategies", "", *DIGITS], "--strategies", None),
    ("compare out", lambda w: ["compare", *DIGITS, "--out", w["run"]], "earlier run", None),
    (
        "compare after gan",
        lambda w: ["compare", "--task", "gan", "--after-rounds", "2"],
        "--task gan",
        None,
    ),
    ("sweep scenario", lambda w: ["sweep", *DIGITS, "--scenarios", "x"], "unknown scenario", None),
    ("sweep partition", lambda w: ["sweep", *DIGITS, "--partitions", "y"], "partition", None),
    ("sweep seeds", lambda w: ["sweep", *DIGITS, "--seeds", "a"], "--seeds", None),
    ("sweep cell", lambda w: ["sweep", *DIGITS, "--scenarios", "client-5"], "client-5", None),
    ("sweep out", lambda w: ["sweep", *DIGITS, "--out", w["run"]], "earlier run", None),
    ("sweep gan", lambda w: ["sweep", *DIGITS, "--task", "gan"], "classifier", None),
    ("spd device", lambda w: [*SPD(w), "--forget-class", "3", "--device", "bogus"], "bogus", None),
    ("spd gpu", lambda w: [*SPD(w), "--forget-class", "3", "--device", "cuda:99"], "cuda", None),
    ("spd out", lambda w: [*SPD(w), "--forget-class", "3", "--out", w["file"]], "folder", None),
    ("spd 99", lambda w: [*SPD(w), "--forget-data", w["label99"]], "label 99", None),
    ("spd -1", lambda w: [*SPD(w), "--forget-data", w["label-1"]], "label -1", None),
    ("spd npy", lambda w: [*SPD(w), "--forget-data", w["npy"]], "expected an .npz", None),
    ("spd nan", lambda w: [*SPD(w), "--forget-data", w["nan"]], "finite", None),
    ("spd 0-255", lambda w: [*SPD(w), "--forget-data", w["255"]], "[0, 1]", None),
    ("spd shape", lambda w: [*SPD(w), "--forget-data", w["shape"]], "shape", None),
    (
        "spd data dir",
        lambda w: [*SPD(w), "--forget-class", "3", "--data-dir", w["file"]],
        "not a folder",
        None,
    ),
    (
        "skyeye samples",
        lambda w: [*SKYEYE(w), "--forget-class", "3", "--local-samples", "-1"],
        "--local-samples",
        None,
    ),
    (
        "skyeye trigger 0",
        lambda w: [*SKYEYE(w), "--backdoor-target", "0", "--trigger-size", "0"],
        "--trigger-size",
        None,
    ),
    (
        "skyeye trigger 100",
        lambda w: [*SKYEYE(w), "--backdoor-target", "0", "--trigger-size", "100"],
        "--trigger-size 100",
        None,
    ),
    (
        "skyeye local data",
        lambda w: [*SKYEYE(w), "--forget-class", "3", "--local-data", w["255"]],
        "[0, 1]",
        None,
    ),
    (
        "ledger not json",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--sample-ids", "1"],
        "not a deletion ledger",
        _ledger(b"{oops"),
    ),
    (
        "ledger not utf8",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--sample-ids", "1"],
        "not a deletion ledger",
        _ledger(b"\xff\xfe{}"),
    ),
    (
        "requests is a file",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--sample-ids", "1"],
        "expected a folder",
        _requests_is_a_file,
    ),
    (
        "samples not utf8",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--samples", w["latin"]],
        "not UTF-8",
        None,
    ),
    (
        "sample ids",
        lambda w: ["request-deletion", "--node-dir", w["node"], "--sample-ids", "a,b"],
        "row ids",
        None,
    ),
    ("mnist cache", lambda w: ["data", "mnist", "--data-dir", w["mnist-cache"]], "mnist", None),
    ("mnist dir", lambda w: ["data", "mnist", "--data-dir", w["file"]], "not a folder", None),
]


def _snapshot(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


@pytest.mark.parametrize(("name", "args", "fragment", "prepare"), CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2_and_harms_nothing(
    world, tmp_path, capsys, name, args, fragment, prepare
) -> None:
    if prepare is not None:
        prepare(world)
    before = _snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(args(world))
    captured = capsys.readouterr()
    assert info.value.code == 2, captured.err
    assert captured.err.count("\n") == 1 and captured.err.startswith("error: "), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert fragment.lower() in captured.err.lower(), captured.err
    after = _snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing changed or gone
    assert not [k for k in after if k not in before and not k.endswith(".lock")], after.keys()


def test_overwrite_replaces_only_the_earlier_runs_files(tmp_path: Path) -> None:
    from fedforget.simulations.runner import RUN_FILE, prepare_run_folder

    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "summary.json").write_text("{}")
    (folder / "verification").mkdir()
    (folder / "notes.txt").write_text("mine")
    prepare_run_folder(folder, overwrite=True)
    assert not (folder / "summary.json").exists() and not (folder / "verification").exists()
    assert (folder / "notes.txt").read_text() == "mine"
    assert json.loads((folder / RUN_FILE).read_text())["status"] == "running"
