"""Benchmark: fedforget on Flower against a plain-PyTorch floor of the same work (prints numbers).

``python -m fedforget.simulations.benchmark --clients 20,100,1000 --rounds 8`` runs, for each
client count, ``fedforget simulate`` (the deletion after the CLI's default deletion round, or
after the last round when there are fewer; ``--deletion-round`` sets it; no reference run) and
right after it, in worker processes of this run, a plain-PyTorch FedAvg of the same work: the
same model, federation split and training settings (:class:`~fedforget.federated.
LocalFederation`, the loop the clients run), as many clients per round as the simulation
trained, split over ``--workers`` processes (default: as many as Ray runs client actors), no
Flower, no Ray. Per client count it prints:

- round: mean wall seconds of a federated round (from round 2 on when there are two: round 1
  also starts the Ray actors), without the server's evaluation;
- floor: the same for the plain-PyTorch rounds, and round / floor;
- deletion: unlearning + recovery seconds, and their share of a round;
- start-up: seconds from the call to the first round (checks, data, Ray, the ServerApp)
  plus what round 1 takes beyond a steady round (Ray starts the client actors then);
- evaluation: the server's evaluation of the global model after a round (mean seconds);
- peak memory: resident set of this process and its whole tree (Ray's processes, the floor's
  workers), sampled during the simulation and the floor.

Both are measured in the same run on the same machine, one after the other; the mean load
average during each is printed, since on a machine shared with other work a ratio stands only
when the two loads are alike, and absolute seconds not at all.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.table import Table

from fedforget.config import DeletionConfig, SimulationConfig, validate_config
from fedforget.data import build_federation, resolve_training
from fedforget.federated import ClientUpdate, LocalFederation, weighted_average
from fedforget.report.recorder import Display
from fedforget.simulations.memory import GIB, MemorySampler
from fedforget.simulations.runner import run_folder, simulate
from fedforget.training import state_to_numpy


class TimingDisplay(Display):
    """Clocks what the run summary does not: start-up and the server's evaluation per round.

    The recorder evaluates the global model between telling its display that a round finished
    and handing it the metrics, so the gap between the two is the evaluation.
    """

    def __init__(self) -> None:
        self.called = time.perf_counter()
        self.first_round_started: float | None = None
        self.evaluation_seconds: list[float] = []
        self._round_finished: float | None = None

    @property
    def startup_seconds(self) -> float:
        """Seconds from the call to the first round (nan if no round started)."""
        if self.first_round_started is None:
            return float("nan")
        return self.first_round_started - self.called

    def run_started(self, phase: str, total_rounds: int) -> None:
        if self.first_round_started is None:
            self.first_round_started = time.perf_counter()

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self._round_finished = time.perf_counter()

    def round_metrics(self, phase: str, server_round: int, metrics: Any) -> None:
        if self._round_finished is not None:
            self.evaluation_seconds.append(time.perf_counter() - self._round_finished)
            self._round_finished = None


# The floor's worker processes: each builds the federation once, then trains the clients it
# is handed, exactly as a client actor does (LocalFederation runs train_local).
_WORKER: dict[str, Any] = {}


def _start_floor_worker(config_json: str) -> None:
    torch.set_num_threads(1)  # as a Ray actor with one CPU (OMP_NUM_THREADS=1)
    config = SimulationConfig.from_json(config_json)
    federation = build_federation(config)
    from fedforget.server.app import model_factory

    _WORKER["config"] = config
    _WORKER["federation"] = LocalFederation.from_federation(
        federation, model_factory(config, federation), config.train, drop_deleted=False
    )


def _train_clients(job: tuple[dict, list[int], int]) -> list[ClientUpdate]:
    state, clients, seed = job
    config: SimulationConfig = _WORKER["config"]
    local: LocalFederation = _WORKER["federation"]
    return local.train_clients(state, clients, config.train.local_epochs, config.train.lr, seed)


def floor_rounds(
    config: SimulationConfig, clients_per_round: int, rounds: int, workers: int
) -> list[float]:
    """Wall seconds of ``rounds`` plain-PyTorch FedAvg rounds of the simulation's work.

    Each round ``clients_per_round`` clients (seeded sample) train the global model, split
    over ``workers`` processes that were started (and loaded the data) before the clock runs.
    """
    federation = build_federation(config)
    from fedforget.server.app import model_factory

    state = state_to_numpy(model_factory(config, federation)())
    rng = random.Random(config.seed)
    context = multiprocessing.get_context("spawn")
    seconds: list[float] = []
    with context.Pool(workers, _start_floor_worker, (config.to_json(),)) as pool:
        pool.map(time.sleep, [0.0] * workers, chunksize=1)  # every worker has started
        for server_round in range(1, rounds + 1):
            sampled = sorted(rng.sample(range(config.clients), clients_per_round))
            jobs = [(state, sampled[w::workers], server_round) for w in range(workers)]
            started = time.perf_counter()
            updates = [u for part in pool.map(_train_clients, jobs, chunksize=1) for u in part]
            state = weighted_average(updates)
            seconds.append(time.perf_counter() - started)
    return seconds


def steady(values: Sequence[float]) -> float:
    """Mean without the first value when there are more (it pays for the start)."""
    return statistics.mean(values[1:] if len(values) > 1 else values)


def benchmark_one(config: SimulationConfig, workers: int) -> dict[str, Any]:
    """Simulate ``config``, then the floor of the same work; the measures of both."""
    display = TimingDisplay()
    with MemorySampler() as memory, run_folder(config.out, overwrite=True):
        summary = simulate(config, display)
    rows = [json.loads(line) for line in (config.out / "rounds.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("phase") == "federated" and "clients" in r]
    clients_per_round = round(statistics.mean(r["clients"] for r in rows))
    with MemorySampler() as floor_memory:
        floor = floor_rounds(config, clients_per_round, config.train.rounds, workers)
    timings = summary.timings
    round_seconds = steady(timings.round_seconds)
    floor_seconds = steady(floor)
    deletion = (timings.unlearning_seconds or 0.0) + (timings.recovery_seconds or 0.0)
    return {
        "clients": config.clients,
        "clients_per_round": clients_per_round,
        "round_s": round_seconds,
        "floor_round_s": floor_seconds,
        "round_over_floor": round_seconds / floor_seconds,
        "unlearning_s": timings.unlearning_seconds,
        "recovery_s": timings.recovery_seconds,
        "relay_hops": summary.deletion.relay_hops,
        "deletion_over_round": deletion / round_seconds,
        # Ray starts the client actors during round 1: what it takes beyond a steady round
        "startup_s": display.startup_seconds + timings.round_seconds[0] - round_seconds,
        "first_round_s": timings.round_seconds[0],
        "evaluation_s": statistics.mean(display.evaluation_seconds),
        "peak_tree_gib": memory.peak_tree / GIB,
        "peak_driver_gib": memory.peak_self / GIB,
        "floor_peak_tree_gib": floor_memory.peak_tree / GIB,
        "load_during_simulation": memory.mean_load,
        "load_during_floor": floor_memory.mean_load,
        "test_accuracy": summary.phases.before_deletion.test_accuracy
        if summary.phases.before_deletion
        else None,
        "total_s": timings.total_seconds,
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", default="20,100,1000", help="Comma-separated counts.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--deletion-round",
        type=int,
        default=None,
        help="Round after which the deletion runs (default: the CLI's, at most --rounds).",
    )
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--fraction-train", type=float, default=1.0)
    parser.add_argument("--local-epochs", type=int, default=None, help="Default: the CLI's.")
    parser.add_argument("--batch-size", type=int, default=None, help="Default: the CLI's.")
    parser.add_argument("--workers", type=int, default=None, help="Floor processes.")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    return parser.parse_args(argv)


def run_config(args: argparse.Namespace, clients: int) -> SimulationConfig:
    """The simulate settings of one client count: defaults but the rounds and deletion round.

    ``--local-epochs`` / ``--batch-size`` change the local training; unset, they are derived
    from the data (:meth:`fedforget.config.TrainConfig.resolved`).
    """
    train = {"rounds": args.rounds, "fraction_train": args.fraction_train}
    if args.local_epochs is not None:
        train["local_epochs"] = args.local_epochs
    if args.batch_size is not None:
        train["batch_size"] = args.batch_size
    config = validate_config(
        {
            "clients": clients,
            "reference": "none",
            "out": args.out / f"{clients}-clients",
            "data": {"dataset": args.dataset},
            "train": train,
            "deletion": {"round": deletion_round(args)},
        }
    )
    return resolve_training(config)


def deletion_round(args: argparse.Namespace) -> int:
    """``--deletion-round``, else the CLI's default deletion round, at most the last round.

    The deletion step's cost depends on the model it starts from: after the default round the
    model is trained; a model still learning loses accuracy to unlearning, which the relay's
    hops then restore, so an early deletion measures a dearer step than the default run's.
    """
    if args.deletion_round is not None:
        return args.deletion_round
    default = DeletionConfig.model_fields["round"].default
    return min(int(default), args.rounds)


def main(argv: list[str] | None = None) -> Any:
    """Run the benchmark for every client count; print a table, write ``benchmark.json``.

    ``--deployment`` runs :mod:`~fedforget.simulations.deployment_benchmark` instead (fedforget
    against a plain Flower App on a local SuperLink; its own options follow).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--deployment" in argv:
        from fedforget.simulations import deployment_benchmark

        argv.remove("--deployment")
        return deployment_benchmark.main(argv)
    args = parse_args(argv)
    counts = [int(part) for part in args.clients.split(",") if part.strip()]
    results = []
    for clients in counts:
        config = run_config(args, clients)
        workers = args.workers or max(1, int((os.cpu_count() or 1) / config.resources.client_cpus))
        results.append(benchmark_one(config, workers))
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "benchmark.json").write_text(json.dumps(results, indent=2))
    print_table(results, args)
    return results


def print_table(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    train = run_config(args, results[0]["clients"]).train
    title = (
        f"fedforget benchmark: {args.dataset}, {args.rounds} rounds, fraction-train "
        f"{args.fraction_train:g}, {train.local_epochs} local epochs of batch "
        f"{train.batch_size}, lr {train.lr:g}, {cores} cores (round and floor measured in "
        "the same run)"
    )
    table = Table(title=title)
    table.add_column("measure")
    for result in results:
        table.add_column(f"{result['clients']} clients", justify="right")
    for key in results[0]:
        if key == "clients":
            continue
        cells = [_cell(result[key]) for result in results]
        table.add_row(key, *cells)
    Console().print(table)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "-" if value is None else str(value)


if __name__ == "__main__":
    main()
