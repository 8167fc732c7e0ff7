"""Deployment benchmark: fedforget and a plain Flower App on one SuperLink (prints numbers).

``python -m fedforget.simulations.benchmark --deployment`` starts a SuperLink and ``--nodes``
SuperNodes on localhost (:class:`~fedforget.simulations.deployment.LocalDeployment`), gives
each node an IID share of ``--dataset`` and runs, on the same processes and data, one after the
other:

1. plain Flower (:mod:`fedforget.simulations.plain_flower`): ``FedAvg`` of the same LeNet-5
   with the same local epochs, batch size, learning rate and momentum, written with Flower's
   API only;
2. fedforget (its Flower App, ``--reference none --verify none``) after node 0's user filed a
   deletion request for ``--delete`` of its samples, taken after ``--deletion-round``.

It prints each run's median round (the training exchange and aggregation, from round 2 on:
the first round also starts the SuperNodes' first app processes), fedforget round / plain
round, the deletion step (unlearning + relay) in seconds and in fedforget rounds, the message
round trips the step waited for, the deletion's whole cost between two rounds (the gap between
round D and round D+1 less an ordinary gap, which holds the server's evaluation), and the peak
resident memory of the deployment's processes (SuperLink, SuperNodes and the apps they start).
Both runs share the machine's load; the mean load average during each is printed, and a ratio
stands only where the two are alike.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from fedforget.cli import run_config_argument
from fedforget.config import SimulationConfig, TrainConfig, validate_config
from fedforget.data import ArrayDataset, load_dataset
from fedforget.node import file_request, write_node_data
from fedforget.report.recorder import ROUNDS_FILE, SUMMARY_FILE
from fedforget.simulations import plain_flower
from fedforget.simulations.deployment import LocalDeployment, marked_processes, stage_app
from fedforget.simulations.memory import GIB, MemorySampler

PLAIN_MODULE = "plain_flower_app"
PLAIN_PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "plain-flower"
version = "1.0.0"
description = "FedAvg of LeNet-5 with Flower's API only (fedforget's deployment baseline)"
license = "Apache-2.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedforget"

[tool.flwr.app.components]
serverapp = "{module}:server"
clientapp = "{module}:client"

[tool.flwr.app.config]
num-rounds = 3
local-epochs = 1
batch-size = 32
lr = 0.05
momentum = 0.9
seed = 0
num-classes = 10
test-file = ""
out-file = ""
"""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m fedforget.simulations.benchmark --deployment",
        description=__doc__.splitlines()[0],
    )
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--deletion-round", type=int, default=3)
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--local-epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--delete", type=float, default=0.06, help="Share of node 0's samples.")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=120.0, help="Seconds per message.")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark-deployment"))
    args = parser.parse_args(argv)
    if not 1 <= args.deletion_round < args.rounds:
        parser.error("--deletion-round must be at least 1 and below --rounds")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2")
    return args


def stage_plain_app(destination: Path) -> Path:
    """The plain Flower App as a folder ``flwr run`` can ship: its module and a pyproject."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(plain_flower.__file__, destination / f"{PLAIN_MODULE}.py")
    (destination / "pyproject.toml").write_text(PLAIN_PYPROJECT.format(module=PLAIN_MODULE))
    return destination


def node_shares(train: ArrayDataset, nodes: int, seed: int) -> list[ArrayDataset]:
    """An IID split of ``train`` over ``nodes``, in the data file's order within each share."""
    order = np.random.default_rng(seed).permutation(len(train))
    return [train.subset(np.sort(part)) for part in np.array_split(order, nodes)]


def deployment_memory(deployment: LocalDeployment) -> MemorySampler:
    """Samples the deployment's processes (SuperLink, SuperNodes, the apps they start)."""
    return MemorySampler(tree=lambda: marked_processes(deployment.marker))


def plain_run_config(
    args: argparse.Namespace, test_file: Path, out_file: Path, classes: int
) -> str:
    """The ``--run-config`` of the plain app: the same training settings as fedforget's run."""
    entries = {
        "num-rounds": args.rounds,
        "local-epochs": args.local_epochs,
        "batch-size": args.batch_size,
        "lr": args.lr,
        "momentum": TrainConfig.model_fields["momentum"].default,
        "seed": args.seed,
        "num-classes": classes,
        "test-file": f"'{test_file}'",
        "out-file": f"'{out_file}'",
    }
    return " ".join(f"{key}={value}" for key, value in entries.items())


def fedforget_config(args: argparse.Namespace, out: Path) -> SimulationConfig:
    """fedforget's run: node-side requests, no reference, no verification."""
    return validate_config(
        {
            "clients": args.nodes,
            "seed": args.seed,
            "data": {"dataset": args.dataset},
            "train": {
                "rounds": args.rounds,
                "local_epochs": args.local_epochs,
                "batch_size": args.batch_size,
                "lr": args.lr,
            },
            "deletion": {"mode": "requests", "round": args.deletion_round},
            "reference": "none",
            "verify": {"method": "none"},
            "message_timeout": args.timeout,
            "out": str(out),
        }
    )


def fedforget_figures(run: Path, deletion_round: int) -> dict[str, Any]:
    """Round seconds, the deletion step and the gap it adds between two rounds (run folder)."""
    rows = [json.loads(line) for line in (run / ROUNDS_FILE).read_text().splitlines()]
    rounds = sorted(
        (r for r in rows if r.get("phase") == "federated" and "round_seconds" in r),
        key=lambda r: r["round"],
    )
    gaps = {
        a["round"]: b["started_at"] - a["started_at"] - a["round_seconds"]
        for a, b in itertools.pairwise(rounds)
    }
    deletion = json.loads((run / SUMMARY_FILE).read_text())["deletion"]
    ordinary = [gap for r, gap in gaps.items() if r != deletion_round]
    step = deletion["unlearning_seconds"] + deletion["recovery_seconds"]
    return {
        "round_seconds": [r["round_seconds"] for r in rounds],
        "deletion_step_seconds": step,
        "deletion_round_trips": deletion.get("round_trips"),
        "relay_hops": deletion.get("relay_hops"),
        "deletion_gap_seconds": (
            gaps[deletion_round] - statistics.median(ordinary)
            if deletion_round in gaps and ordinary
            else None
        ),
        "accuracy": [r.get("test_accuracy") for r in rounds],
    }


def steady(seconds: list[float]) -> float:
    """The median round from round 2 on (round 1 also starts the first app processes)."""
    return statistics.median(seconds[1:] if len(seconds) > 1 else seconds)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run both apps on one deployment; print the table and write ``deployment.json``."""
    args = parse_args(argv)
    work = args.out.resolve()
    if work.exists() and any(work.iterdir()):
        if not (work / "flwr-home").is_dir():  # never clear a folder this did not write
            raise SystemExit(f"--out {args.out} holds other files: name a new folder")
        shutil.rmtree(work)
    data = load_dataset(args.dataset)
    shares = node_shares(data.train, args.nodes, args.seed)
    dirs = [work / f"node{i}" for i in range(args.nodes)]
    for folder, share in zip(dirs, shares, strict=True):
        write_node_data(folder, share)
    test_file = work / "test.npz"
    np.savez(test_file, x=data.test.x, y=data.test.y)
    deleted = np.random.default_rng(args.seed).choice(
        len(shares[0]), max(1, round(args.delete * len(shares[0]))), replace=False
    )
    plain_out, run = work / "plain.json", work / "fedforget-run"
    result: dict[str, Any] = {"nodes": args.nodes, "dataset": args.dataset}
    with LocalDeployment(work, dirs) as deployment:
        with deployment_memory(deployment) as memory:
            config = plain_run_config(args, test_file, plain_out, data.num_classes)
            outcome = deployment.run(stage_plain_app(work / "plain-app"), config)
        _check(outcome, "plain Flower")
        plain = json.loads(plain_out.read_text())
        result["plain"] = {
            **plain,
            "seconds": outcome.seconds,
            "peak_memory_gib": memory.peak_tree / GIB,
            "load": memory.mean_load,
        }
        file_request(dirs[0], sorted(int(i) for i in deleted), None)
        with deployment_memory(deployment) as memory:
            config = run_config_argument(fedforget_config(args, run))
            outcome = deployment.run(stage_app(work / "fedforget-app"), config)
        _check(outcome, "fedforget")
        result["fedforget"] = {
            **fedforget_figures(run, args.deletion_round),
            "seconds": outcome.seconds,
            "peak_memory_gib": memory.peak_tree / GIB,
            "load": memory.mean_load,
        }
    result["ratios"] = ratios(result)
    (work / "deployment.json").write_text(json.dumps(result, indent=2))
    print_table(result, args)
    return result


def _check(outcome: Any, name: str) -> None:
    if outcome.status != "finished:completed":
        raise SystemExit(f"the {name} run ended {outcome.status}: {outcome.details}")


def ratios(result: dict[str, Any]) -> dict[str, float | None]:
    """fedforget's round over plain Flower's, and the deletion in fedforget rounds."""
    ours, plain = result["fedforget"], result["plain"]
    round_ours = steady(ours["round_seconds"])
    gap = ours["deletion_gap_seconds"]
    return {
        "round_over_plain": round_ours / steady(plain["round_seconds"]),
        "deletion_step_rounds": ours["deletion_step_seconds"] / round_ours,
        "deletion_gap_rounds": gap / round_ours if gap is not None else None,
    }


def print_table(result: dict[str, Any], args: argparse.Namespace) -> None:
    ours, plain, ratio = result["fedforget"], result["plain"], result["ratios"]
    title = (
        f"deployment benchmark: {args.nodes} SuperNodes on localhost, {args.dataset}, "
        f"{args.rounds} rounds of {args.local_epochs} local epochs (batch {args.batch_size}, "
        f"lr {args.lr:g}), deletion of {args.delete:.0%} of node 0 after round "
        f"{args.deletion_round}, {os.cpu_count()} cores"
    )
    table = Table(title=title)
    for column in ("measure", "plain Flower", "fedforget"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    table.add_row(
        "round (median from round 2), s",
        _f(steady(plain["round_seconds"])),
        _f(steady(ours["round_seconds"])),
    )
    table.add_row("round / plain Flower round", "1", _f(ratio["round_over_plain"]))
    table.add_row("final test accuracy", _f(plain["accuracy"][-1]), _f(ours["accuracy"][-1]))
    table.add_row("deletion step (unlearning + relay), s", "-", _f(ours["deletion_step_seconds"]))
    table.add_row("  in fedforget rounds", "-", _f(ratio["deletion_step_rounds"]))
    table.add_row("  round trips it waited for", "-", str(ours["deletion_round_trips"]))
    table.add_row("  relay hops", "-", str(ours["relay_hops"]))
    table.add_row("deletion's whole gap between rounds, s", "-", _f(ours["deletion_gap_seconds"]))
    table.add_row("  in fedforget rounds", "-", _f(ratio["deletion_gap_rounds"]))
    table.add_row("run (flwr run), s", _f(plain["seconds"]), _f(ours["seconds"]))
    table.add_row(
        "peak memory of the deployment, GiB",
        _f(plain["peak_memory_gib"]),
        _f(ours["peak_memory_gib"]),
    )
    table.add_row("mean load average", _f(plain["load"]), _f(ours["load"]))
    Console().print(table)


def _f(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    main()
