"""Benchmark: simulation efficiency, unlearning cost and peak memory (prints numbers).

Run ``python -m fedforget.simulations.benchmark`` (defaults: the MNIST run of docs/results.md,
20 clients). It measures, on this machine and in one process:

(a) simulation efficiency = summed client compute seconds / (cores x round wall seconds),
    per round, for all rounds and for steady state (round 1 includes Ray actor start-up and
    data loading); and Flower's own floor: the wall time of a round whose clients do no work
    (they echo the model), which bounds the efficiency reachable with this per-round compute;
(b) unlearning + recovery wall time against one FedAvg round and against the retrain run;
(c) peak memory: resident set of this process and of the whole process tree (Ray workers).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
from pathlib import Path

import psutil
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation
from rich.console import Console
from rich.table import Table

from fedforget import protocol as P
from fedforget.config import validate_config
from fedforget.models import build_model
from fedforget.simulations.runner import backend_config, simulate

echo_client = ClientApp()


@echo_client.train()
def _echo(message: Message, context: Context) -> Message:
    """A client that does no work: Flower's per-message cost alone."""
    metrics = MetricRecord({P.NUM_EXAMPLES: 1})
    content = RecordDict({P.ARRAYS: message.content[P.ARRAYS], P.METRICS: metrics})
    return Message(content, reply_to=message)


class MemorySampler:
    """Samples the resident memory of this process and of its whole tree in a thread."""

    def __init__(self, interval: float = 0.5) -> None:
        self.interval = interval
        self.peak_self = 0
        self.peak_tree = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            try:
                own = me.memory_info().rss
                tree = own + sum(_rss(child) for child in me.children(recursive=True))
            except psutil.Error:
                continue
            self.peak_self = max(self.peak_self, own)
            self.peak_tree = max(self.peak_tree, tree)
            self._stop.wait(self.interval)


def _rss(process: psutil.Process) -> int:
    try:
        return process.memory_info().rss
    except psutil.Error:
        return 0


def flower_floor(clients: int, rounds: int) -> list[float]:
    """Wall seconds of ``rounds`` rounds in which every client echoes a LeNet-5 at once."""
    config = validate_config({"clients": clients})
    seconds: list[float] = []
    server = ServerApp()

    @server.main()
    def _main(grid: Grid, context: Context) -> None:
        arrays = ArrayRecord(build_model("lenet5", 10, 1, 28).state_dict())
        while len(list(grid.get_node_ids())) < clients:
            time.sleep(0.2)
        nodes = list(grid.get_node_ids())
        for server_round in range(rounds):
            content = RecordDict({P.ARRAYS: arrays, P.CONFIG: ConfigRecord({"r": server_round})})
            started = time.perf_counter()
            messages = [Message(content, dst_node_id=node, message_type="train") for node in nodes]
            list(grid.send_and_receive(messages))
            seconds.append(time.perf_counter() - started)

    run_simulation(server, echo_client, clients, backend_config=backend_config(config))
    return seconds


def _efficiency(rows: list[dict], cores: int) -> dict[str, float]:
    compute = sum(r["client_compute_seconds"] for r in rows)
    wall = sum(r["round_seconds"] for r in rows)
    return {"compute": compute, "wall": wall, "efficiency": compute / (cores * wall)}


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table and write ``benchmark.json`` into the run folder."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--floor-rounds", type=int, default=6)
    parser.add_argument("--out", type=Path, default=Path("runs/benchmark"))
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1

    floor = flower_floor(args.clients, args.floor_rounds)
    config = validate_config(
        {"clients": args.clients, "out": args.out, "train": {"rounds": args.rounds}}
    )
    with MemorySampler() as memory:
        summary = simulate(config)
    rows = [
        json.loads(line)
        for line in (args.out / "rounds.jsonl").read_text().splitlines()
        if '"round_seconds"' in line
    ]
    federated = [r for r in rows if r["phase"] in ("federated", "reference")]
    steady = [r for r in federated if r["round"] > 1]
    mean_round = statistics.mean(summary.timings.round_seconds[1:])
    steady_floor = statistics.mean(floor[1:])
    compute_per_round = statistics.mean(r["client_compute_seconds"] for r in steady)
    ideal = compute_per_round / cores
    deletion_cost = summary.timings.unlearning_seconds + summary.timings.recovery_seconds
    result = {
        "cores": cores,
        "efficiency_all_rounds": _efficiency(federated, cores)["efficiency"],
        "efficiency_steady_state": _efficiency(steady, cores)["efficiency"],
        "client_compute_per_round_s": compute_per_round,
        "mean_round_s": mean_round,
        "flower_floor_round_s": steady_floor,
        "efficiency_ceiling_with_floor": ideal / (ideal + steady_floor),
        "unlearning_s": summary.timings.unlearning_seconds,
        "recovery_s": summary.timings.recovery_seconds,
        "relay_hops": summary.deletion.relay_hops,
        "unlearning_plus_recovery_over_round": deletion_cost / mean_round,
        "retrain_s": summary.timings.retrain_seconds,
        "speedup_vs_retrain": (summary.timings.retrain_seconds or 0) / deletion_cost,
        "peak_rss_driver_mib": memory.peak_self / 2**20,
        "peak_rss_tree_mib": memory.peak_tree / 2**20,
        "total_s": summary.timings.total_seconds,
    }
    (args.out / "benchmark.json").write_text(json.dumps(result, indent=2))
    table = Table(title=f"fedforget benchmark ({args.clients} clients, {cores} cores)")
    table.add_column("measure")
    table.add_column("value", justify="right")
    for key, value in result.items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    Console().print(table)
    return result


if __name__ == "__main__":
    main()
