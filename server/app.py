"""The fedforget ServerApp: builds the strategy from configuration and runs it.

``run_server`` is the one code path: the module-level ``app`` (for ``flwr run``) reads the
configuration from the run config key ``fedforget-config`` (JSON; defaults when absent), and
``fedforget simulate`` wraps the same function in a ServerApp of its own.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedforget import protocol as P
from fedforget.attacks_reference import attach_references
from fedforget.config import SimulationConfig
from fedforget.data import Federation, build_federation
from fedforget.metrics import Evaluator
from fedforget.models import ClassifierModel, build_model
from fedforget.report.recorder import Display, RunRecorder
from fedforget.report.summary import Efficiency, Summary, Timings
from fedforget.server.shared import (
    default_out_dir,
    deletion_summary,
    gan_factory,
    reference_retrain,
    to_numpy,
)
from fedforget.strategies import FederatedUnlearning, build_strategy
from fedforget.training import resolve_device

if TYPE_CHECKING:
    from fedforget.server.gan import GanSummary

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``."""
    text = context.run_config.get(P.RUN_CONFIG_KEY)
    config = SimulationConfig.from_json(str(text)) if text else SimulationConfig()
    run_server(grid, config)


def model_factory(config: SimulationConfig, federation: Federation):
    """A zero-argument constructor of the run's model."""

    def build() -> ClassifierModel:
        return build_model(
            config.model, federation.num_classes, federation.in_channels, federation.image_size
        )

    return build


def run_server(
    grid: Grid, config: SimulationConfig, display: Display | None = None
) -> Summary | GanSummary:
    """Run the whole experiment on ``grid``: FedAvg, deletion, unlearning, relay, reference."""
    if config.task == "gan":
        from fedforget.server.gan import run_gan_server

        return run_gan_server(grid, config, display)
    started = time.perf_counter()
    federation = build_federation(config)
    build = model_factory(config, federation)
    torch.manual_seed(config.seed)
    initial_arrays = ArrayRecord(build().state_dict())
    device = resolve_device(config.resources.server_device)
    evaluator = Evaluator(federation, device, config.seed, config.mia)
    attach_references(evaluator, config, build)  # --mia calibrated only
    recorder = RunRecorder(config, evaluator, build, default_out_dir(config), display)
    strategy = build_strategy(
        config,
        build_model=build,
        num_classes=federation.num_classes,
        observer=recorder,
        device=device,
        build_gan=gan_factory(config, federation),
        image_shape=federation.train.x.shape[1:],
        validation=federation.validation,
    )
    result = strategy.start(grid, initial_arrays, num_rounds=config.train.rounds)
    verification = _verify(strategy, grid, result.arrays, config, recorder.out_dir)
    reference_state, retrain_seconds = None, None
    if config.reference == "retrain":
        reference_state, retrain_seconds = reference_retrain(strategy, grid, config.train.rounds)
    timings = Timings(
        round_seconds=strategy.round_seconds,
        unlearning_seconds=_if_deleted(strategy, strategy.deletion.unlearning_seconds),
        recovery_seconds=_if_deleted(strategy, strategy.deletion.recovery_seconds),
        retrain_seconds=retrain_seconds,
        total_seconds=time.perf_counter() - started,
    )
    return recorder.finish(
        final_state=to_numpy(result.arrays),
        reference_state=reference_state,
        deletion=deletion_summary(strategy, config),
        extra={
            "timings": timings,
            "deletions": strategy.ledger.steps,
            "bookkeeping": strategy.bookkeeping.summary(),
            "efficiency": _efficiency(recorder.rounds),
            "verification": verification,
        },
    )


def _verify(
    strategy: FederatedUnlearning,
    grid: Grid,
    arrays: ArrayRecord,
    config: SimulationConfig,
    out_dir: Path,
) -> list[dict] | None:
    """``--verify``: the deleting clients verify the final model; reports into the run folder.

    Each verifying client writes its pictures to ``verification/client-<id>/`` (the run
    folder is on the same machine in a simulation); the server writes each report there as
    ``<method>.json``, so the run folder holds them on a real deployment too.
    """
    method = config.verify.method
    if method == "none" or not strategy.deletion.round:
        return None
    folder = out_dir / "verification"
    reports = strategy.verify_deletion(grid, arrays, method, config.verify.clients, str(folder))
    for report in reports:
        target = folder / f"client-{report['client']}"
        target.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in report.items() if k not in ("client", "method")}
        (target / f"{method}.json").write_text(json.dumps(body, indent=2) + "\n")
    return reports


def _if_deleted(strategy: FederatedUnlearning, seconds: float) -> float | None:
    return seconds if strategy.deletion.round else None


def _efficiency(rows: list[dict]) -> Efficiency | None:
    """Client compute over cores x round wall time, over every FedAvg round of the run."""
    rounds = [r for r in rows if r.get("phase") in ("federated", "reference") and "round" in r]
    if not rounds:
        return None
    cores = os.cpu_count() or 1
    compute = sum(r["client_compute_seconds"] for r in rounds)
    wall = sum(r["round_seconds"] for r in rounds)
    return Efficiency(
        cores=cores,
        client_compute_seconds=compute,
        round_wall_seconds=wall,
        efficiency=compute / (cores * wall) if wall else 0.0,
    )
