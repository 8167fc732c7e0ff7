"""The fedforget ServerApp: builds the strategy from configuration and runs it.

``run_server`` is the one code path: the module-level ``app`` (for ``flwr run``) reads the
configuration from the run config key ``fedforget-config`` (JSON; defaults when absent), and
``fedforget simulate`` wraps the same function in a ServerApp of its own.

On a deployment nobody watches a live display: :class:`FlowerLog` tells each round (its
number, the global model's test accuracy, the clients that trained) and the deletion's
checkpoints in Flower's log, which ``flwr run --stream`` shows, and the run folder gets a
``run.json`` that says whether the run is ``running``, ``complete``, ``interrupted`` or
``failed``, as ``fedforget simulate`` writes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from logging import INFO
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from flwr.app import ArrayRecord, Context
from flwr.common.logger import log
from flwr.serverapp import Grid, ServerApp

from fedforget import protocol as P
from fedforget.attacks_reference import attach_references
from fedforget.config import ConfigError, SimulationConfig
from fedforget.data import Federation, build_federation, resolve_training
from fedforget.metrics import Evaluator, PhaseMetrics
from fedforget.models import ClassifierModel, build_model
from fedforget.report.recorder import SUMMARY_FILE, Display, RunRecorder
from fedforget.report.summary import Efficiency, Summary, Timings
from fedforget.server.shared import (
    default_out_dir,
    deletion_summary,
    gan_factory,
    reference_members,
    reference_retrain,
    to_numpy,
)
from fedforget.stopping import RunStoppedError
from fedforget.strategies import FederatedUnlearning, build_strategy
from fedforget.training import resolve_device

if TYPE_CHECKING:
    from fedforget.server.gan import GanSummary

app = ServerApp()


RUN_FILE = "run.json"
REPORT_ENVELOPE = ("client", "method")
"""A verification report's keys that say who verified how (the file is the report's body)."""
PHASE_LABELS = {"federated": "round", "retrain": "retrain round", "reference": "reference round"}


@app.main()
def main(grid: Grid, context: Context) -> None:
    """Entry point for ``flwr run``: the run told in Flower's log, its folder with ``run.json``."""
    text = context.run_config.get(P.RUN_CONFIG_KEY)
    config = SimulationConfig.from_json(str(text)) if text else SimulationConfig()
    config = config.model_copy(update={"out": default_out_dir(config)})  # one folder, fixed now
    with deployment_run_folder(config.out, context.run_id):
        run_server(grid, config, FlowerLog())


class FlowerLog(Display):
    """The run in Flower's log: each round's number and test accuracy, the deletion's phases.

    The strategy already tells the deletion step (requests, D_f, unlearning, relay hops, the
    nodes' confirmations and their own D_f accuracy); this adds what the recorder measures.
    """

    def __init__(self) -> None:
        self.total_rounds: dict[str, int] = {}
        self.round_info: dict[str, Any] = {}

    def run_started(self, phase: str, total_rounds: int) -> None:
        self.total_rounds[phase] = total_rounds

    def round_finished(self, phase: str, server_round: int, info: dict[str, Any]) -> None:
        self.round_info = info

    def round_metrics(self, phase: str, server_round: int, metrics: PhaseMetrics) -> None:
        info = self.round_info
        log(
            INFO,
            "%s %d/%d: %s; %d clients trained, %d failed, %.1f s",
            PHASE_LABELS.get(phase, phase),
            server_round,
            self.total_rounds.get(phase, server_round),
            accuracy_text(metrics),
            int(info.get("clients", 0)),
            int(info.get("failures", 0)),
            float(info.get("round_seconds", 0.0)),
        )

    def checkpoint_metrics(self, name: str, metrics: PhaseMetrics) -> None:
        log(INFO, "%s: %s", name.replace("_", " "), accuracy_text(metrics))


def accuracy_text(metrics: PhaseMetrics) -> str:
    """The server's test accuracy, and the forgotten classes' or the backdoor's when known."""
    parts = [f"test accuracy {metrics.test_accuracy:.1%}"]
    if metrics.forget_test_accuracy is not None:
        parts.append(f"forgotten classes (test) {metrics.forget_test_accuracy:.1%}")
    if metrics.backdoor_success is not None:
        parts.append(f"backdoor success {metrics.backdoor_success:.1%}")
    return ", ".join(parts)


@contextlib.contextmanager
def deployment_run_folder(folder: Path, run_id: int) -> Iterator[Path]:
    """``run.json`` for the block: ``running``, then ``complete``, ``interrupted`` or ``failed``.

    As ``fedforget simulate`` does, a folder holding an earlier run is refused (two runs never
    mix in one folder). ``command`` is ``null``: the ServerApp process's own arguments are
    Flower's, with its credentials, and the ``flwr run`` command line never reaches it;
    ``flwr_run_id`` names the run for ``flwr ls`` / ``flwr log``.

    Raises
    ------
    ConfigError
        When ``folder`` holds an earlier run.
    """
    earlier = [name for name in (RUN_FILE, SUMMARY_FILE) if (folder / name).exists()]
    if earlier:
        raise ConfigError(f"--out {folder} holds an earlier run ({earlier[0]}); choose another")
    folder.mkdir(parents=True, exist_ok=True)
    started = _now()
    _write_run_json(folder, "running", started, run_id)
    try:
        yield folder
    except (KeyboardInterrupt, RunStoppedError):
        _write_run_json(folder, "interrupted", started, run_id)
        raise
    except BaseException:
        _write_run_json(folder, "failed", started, run_id)
        raise
    _write_run_json(folder, "complete", started, run_id)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _write_run_json(folder: Path, status: str, started: str, run_id: int) -> None:
    record = {
        "status": status,
        "started": started,
        "updated": _now(),
        "command": None,
        "flwr_run_id": run_id,
    }
    tmp = folder / f".{RUN_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    tmp.replace(folder / RUN_FILE)


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
    config = resolve_training(config)  # the run's values, derived once here
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
    references, retrain_seconds = [], None
    if config.reference == "retrain":
        first, retrain_seconds = reference_retrain(strategy, grid, config.train.rounds)
        references = [first, *reference_members(strategy, grid, config.train.rounds, config)]
    timings = Timings(
        round_seconds=strategy.round_seconds,
        unlearning_seconds=_if_deleted(strategy, strategy.deletion.unlearning_seconds),
        recovery_seconds=_if_deleted(strategy, strategy.deletion.recovery_seconds),
        retrain_seconds=retrain_seconds,
        total_seconds=time.perf_counter() - started,
    )
    return recorder.finish(
        final_state=to_numpy(result.arrays),
        reference_states=references,
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
    clients = config.verify.clients
    reports = strategy.gathering.verification(grid, arrays, method, clients, str(folder))
    for report in reports:
        target = folder / f"client-{report['client']}"
        target.mkdir(parents=True, exist_ok=True)
        body = {k: v for k, v in report.items() if k not in REPORT_ENVELOPE}
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
