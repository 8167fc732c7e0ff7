"""``fedforget verify``: check on your own machine whether a model forgot."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from fedforget.cli.app import verify_app
from fedforget.cli.files import check_not_special
from fedforget.config import (
    MAX_CLASSES,
    MAX_EPOCHS,
    MAX_SAMPLES,
    SEED_LIMIT,
    ConfigError,
    check_data_dir,
    check_device,
    check_writable_folder,
)

DEFAULT_DATASET = "mnist"
"""The dataset taken when the weights fit it (fashion-mnist's images have the same shape)."""
PIPED_LOG_SHARE = 0.1
"""On a pipe, a phase's progress is logged each time it advances by this share of its steps."""


def fitting_datasets(path: Path, model_name: str) -> list[str]:
    """The registered datasets of known shape whose images and classes the weights fit.

    :data:`DEFAULT_DATASET` comes first when it fits, then the registry's order.

    Only the weights' shapes are compared (:func:`fedforget.models.weights_fit`): no
    dataset is read, so this is cheap enough to run before the data are loaded.
    """
    from fedforget.data import SOURCE_REGISTRY
    from fedforget.models import read_weights, weights_fit

    try:
        state = read_weights(path)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    fits = [
        name
        for name, source in SOURCE_REGISTRY.items()
        if source.shape is not None
        and weights_fit(
            state, model_name, source.shape.num_classes, source.shape.channels, source.shape.size
        )
    ]
    return sorted(fits, key=lambda name: name != DEFAULT_DATASET)  # the default first


def dataset_of(dataset: str | None, model_name: str, model: Path) -> str:
    """``--dataset``, else the built-in dataset that the ``--model`` weights are sized for.

    Without it the user of digits weights was told that they "do not hold lenet5 weights
    for 1x28x28 images", with no hint of the flag. MNIST is taken when it fits (as before);
    otherwise the one dataset that fits, said on one line; none or several is a one-line
    error naming the flags.
    """
    if dataset is not None:
        return dataset
    fits = fitting_datasets(model, model_name)
    if not fits:
        raise ConfigError(
            f"{model}: {model_name} weights that fit no built-in dataset: "
            "name the data with --dataset (npz: and --data-path) or the model with --model-name"
        )
    if DEFAULT_DATASET not in fits and len(fits) > 1:
        raise ConfigError(
            f"{model}: the weights fit {' and '.join(fits)}: say which with --dataset"
        )
    chosen = DEFAULT_DATASET if DEFAULT_DATASET in fits else fits[0]
    typer.echo(f"dataset: {chosen}, from the weights' shape (--dataset to choose another)")
    return chosen


def _dataset_and_model(
    dataset: str, data_path: Path | None, data_dir: Path | None, model_name: str, path: Path
) -> tuple[Any, Any]:
    """The dataset bundle and the model saved at ``path`` (a state_dict), as ConfigErrors.

    Weights that do not fit the dataset's images name the built-in datasets they do fit.
    """
    from fedforget.data import load_dataset
    from fedforget.models import load_model

    check_data_dir(data_dir)
    options = {k: v for k, v in {"path": data_path, "data_dir": data_dir}.items() if v is not None}
    try:
        bundle = load_dataset(dataset, **options)
        channels, size = bundle.train.x.shape[1], bundle.train.x.shape[2]
        return bundle, load_model(path, model_name, bundle.num_classes, channels, size)
    except ValueError as err:
        message = str(err).splitlines()[0]
        if "does not hold" in message:  # the weights were read: which datasets do they fit?
            fits = [name for name in fitting_datasets(path, model_name) if name != dataset]
            if fits:
                message += f"; they fit --dataset {' or '.join(fits)}"
        raise ConfigError(message) from None


def _npz_dataset(path: Path) -> Any:
    """An .npz with arrays ``x`` and ``y``, read and validated as the ``npz`` source does."""
    from fedforget.data import DataError, load_xy_npz

    try:
        return load_xy_npz(path)
    except DataError as err:
        raise ConfigError(str(err)) from None


def _read_user_images(path: Path, option: str) -> Any:
    """A user's .npz of images: x (N, C, H, W) finite in [0, 1] and N labels, else ConfigError.

    A wrong file must not yield a verdict (NaN or 0-255 pixels score as "forgotten"), so
    this runs before any dataset is loaded or model is built.
    """
    import numpy as np

    if not path.is_file() or not zipfile.is_zipfile(path):
        raise ConfigError(f"{option} {path}: expected an .npz with arrays x and y")
    data = _npz_dataset(path)
    if data.x.ndim != 4 or len(data.y) != len(data.x) or len(data) == 0:
        raise ConfigError(f"{option} {path}: expected x of shape (N, C, H, W) and N labels, N > 0")
    if not np.isfinite(data.x).all() or data.x.min() < 0 or data.x.max() > 1:
        raise ConfigError(f"{option} {path}: pixel values must be finite and lie in [0, 1]")
    return data


def _user_images(path: Path, bundle: Any, option: str) -> Any:
    """:func:`_read_user_images`, matched to the dataset: image shape and label range."""
    data = _read_user_images(path, option)
    shape = tuple(bundle.train.x.shape[1:])
    if tuple(data.x.shape[1:]) != shape:
        raise ConfigError(
            f"{option} {path}: expected x of shape (N, {', '.join(map(str, shape))}) "
            f"like the {bundle.name} images"
        )
    bad = data.y[(data.y < 0) | (data.y >= bundle.num_classes)]
    if len(bad):
        raise ConfigError(
            f"{option} {path}: label {int(bad[0])} is out of range [0, {bundle.num_classes - 1}]"
        )
    return data


def _forget_set(bundle: Any, classes: list[int] | None, data: Path | None) -> Any:
    """D_f for a standalone verification: a file, or the training samples of ``classes``."""
    import numpy as np

    if data is not None:
        return _user_images(data, bundle, "--forget-data")
    if not classes:
        raise ConfigError("say what was forgotten: --forget-class C (repeatable) or --forget-data")
    bad = [c for c in classes if not 0 <= c < bundle.num_classes]
    if bad:
        raise ConfigError(f"forget class {bad[0]} is out of range [0, {bundle.num_classes - 1}]")
    keep = np.flatnonzero(np.isin(bundle.train.y, classes))
    return bundle.train.subset(keep)


ModelPath = Annotated[Path, typer.Option(help="The model under verification (state_dict).")]
ReferencePath = Annotated[
    Path,
    typer.Option(
        "--reference",
        "--source",
        help="The model from before the unlearning (state_dict): judge / source model.",
    ),
]
ForgetClasses = Annotated[
    list[int] | None, typer.Option(help="Forgotten class (repeatable); D_f = its samples.")
]
ForgetData = Annotated[
    Path | None, typer.Option(help="The deleted samples D_f: .npz with x (N,C,H,W in [0,1]), y.")
]
DatasetName = Annotated[
    str | None,
    typer.Option(
        help="mnist, digits, npz, ... (default: the built-in dataset the --model weights fit)."
    ),
]
DataPath = Annotated[Path | None, typer.Option(help="Custom data file or folder.")]
DataDir = Annotated[Path | None, typer.Option(help="Dataset cache folder.")]
ModelName = Annotated[str, typer.Option(help="Architecture of both models.")]
Seed = Annotated[int, typer.Option(min=0, max=SEED_LIMIT - 1, help="Seed.")]
Device = Annotated[str, typer.Option(help="auto | cpu | cuda[:N].")]


@verify_app.command("skyeye")
def verify_skyeye(
    model: ModelPath,
    reference: ReferencePath,
    forget_class: ForgetClasses = None,
    backdoor_target: Annotated[
        int | None,
        typer.Option(
            min=0, max=MAX_CLASSES - 1, help="Backdoor deletion: the trigger's target class."
        ),
    ] = None,
    trigger_size: Annotated[int, typer.Option(max=1024, help="Side of the square trigger.")] = 4,
    forget_data: ForgetData = None,
    local_data: Annotated[
        Path | None, typer.Option(help="Your own images (.npz with x, y); default: a sample.")
    ] = None,
    local_samples: Annotated[
        int,
        typer.Option(
            max=MAX_SAMPLES, help="Without --local-data: this many retained training images."
        ),
    ] = 3000,
    dataset: DatasetName = None,
    data_path: DataPath = None,
    data_dir: DataDir = None,
    model_name: ModelName = "lenet5",
    architecture: Annotated[str, typer.Option(help="dcgan (fast default) | paper.")] = "dcgan",
    steps: Annotated[
        int, typer.Option(min=1, max=1_000_000, help="GAN training steps (at most 1,000,000).")
    ] = 2000,
    samples_per_class: Annotated[
        int, typer.Option(min=1, max=100_000, help="Drawings the judge reads.")
    ] = 100,
    control: Annotated[
        bool, typer.Option(help="Also train a GAN with the reference (Fig. 11's before).")
    ] = True,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path, typer.Option(help="Where skyeye.json and the PNGs go.")] = Path(
        "verify-skyeye"
    ),
) -> None:
    """Skyeye (paper 000): a GAN draws what the model still knows; the reference judges."""
    import numpy as np

    from fedforget.data import triggered_samples

    _check_verify_options(
        device,
        out,
        {"--forget-data": forget_data, "--local-data": local_data},
        {"--model": model, "--reference": reference},
    )
    if local_samples < 1:
        raise ConfigError(f"--local-samples must be at least 1, got {local_samples}")
    if trigger_size < 1:
        raise ConfigError(f"--trigger-size must be at least 1, got {trigger_size}")
    dataset = dataset_of(dataset, model_name, model)
    bundle, unlearned = _dataset_and_model(dataset, data_path, data_dir, model_name, model)
    _, before = _dataset_and_model(dataset, data_path, data_dir, model_name, reference)
    classes = sorted(set(forget_class or []))
    if not classes and backdoor_target is None:
        raise ConfigError("say what was deleted: --forget-class C or --backdoor-target T")
    if backdoor_target is not None and not 0 <= backdoor_target < bundle.num_classes:
        raise ConfigError(f"backdoor target {backdoor_target} is out of range")
    side = int(min(bundle.train.x.shape[2:]))
    if backdoor_target is not None and trigger_size >= side:
        raise ConfigError(f"--trigger-size {trigger_size} must be smaller than the {side}px images")
    forget = None
    if forget_data is not None or classes:
        forget = _forget_set(bundle, classes, forget_data)
    elif backdoor_target is not None:
        forget = triggered_samples(bundle.train, backdoor_target, trigger_size, 300, seed)
    own = _local_images(bundle, local_data, classes, local_samples, seed)
    if backdoor_target is not None and forget is not None:
        own = type(own)(x=np.concatenate([own.x, forget.x]), y=np.concatenate([own.y, forget.y]))
    task = _task(bundle, unlearned, before, reference, own, forget, classes)
    if backdoor_target is not None:
        task = replace(task, backdoor_target=backdoor_target, trigger_size=trigger_size)
    options = {
        "architecture": architecture,
        "steps": steps,
        "samples_per_class": samples_per_class,
        "control": control,
        "seed": seed,
        "device": device,
    }
    result = _run_verifier("skyeye", task, options, out)
    report = result.to_json()
    shown = ", ".join(f"{c}: {r:.0%}" for c, r in report["recognition"].items())
    typer.echo(f"Skyeye verdict: {report['verdict']} ({report['seconds']:.0f} s) -> {out}")
    typer.echo(f"recognition by the reference judge: {shown}")
    for reason in getattr(result, "reasons", []):
        typer.echo(f"  {reason}")


@verify_app.command("spd")
def verify_spd(
    model: ModelPath,
    reference: ReferencePath,
    forget_class: ForgetClasses = None,
    forget_data: ForgetData = None,
    dataset: DatasetName = None,
    data_path: DataPath = None,
    data_dir: DataDir = None,
    model_name: ModelName = "lenet5",
    samples: Annotated[
        int, typer.Option(min=1, max=MAX_SAMPLES, help="At most this many D_f samples.")
    ] = 2000,
    epochs: Annotated[
        int, typer.Option(min=1, max=MAX_EPOCHS, help="Generator training epochs.")
    ] = 10,
    seed: Seed = 0,
    device: Device = "auto",
    out: Annotated[Path, typer.Option(help="Where spd.json and spd.png go.")] = Path("verify-spd"),
) -> None:
    """SPD-GAN unlearning degree (paper 003): acc(source, D_p) - acc(unlearned, D_p)."""
    _check_verify_options(
        device, out, {"--forget-data": forget_data}, {"--model": model, "--reference": reference}
    )
    dataset = dataset_of(dataset, model_name, model)
    bundle, unlearned = _dataset_and_model(dataset, data_path, data_dir, model_name, model)
    _, original = _dataset_and_model(dataset, data_path, data_dir, model_name, reference)
    forget = _forget_set(bundle, forget_class, forget_data)
    task = _task(bundle, unlearned, original, reference, forget, forget, forget_class or [])
    options = {"max_samples": samples, "epochs": epochs, "seed": seed, "device": device}
    result = _run_verifier("spd", task, options, out)
    typer.echo(
        f"SPD degree {result.degree:.4f} (max {result.max_degree:.4f}): source "
        f"{result.source_accuracy:.2%} vs unlearned {result.unlearned_accuracy:.2%} on "
        f"{result.samples} perturbed D_f samples, {result.seconds:.1f} s -> {out}/spd.json"
    )


def _check_verify_options(
    device: str, out: Path, images: dict[str, Path | None], models: dict[str, Path]
) -> None:
    """Device, output folder and the user's files, before any data or model is loaded.

    A model path that is a FIFO or a device is refused here: loading it would block or
    never end.
    """
    check_device(device)
    check_writable_folder(out)
    for option, path in models.items():
        check_not_special(path, option)
    for option, path in images.items():
        if path is not None:
            _read_user_images(path, option)


def _local_images(
    bundle: Any, path: Path | None, forgotten: list[int], limit: int, seed: int
) -> Any:
    """The user's own images: a file, or a seeded sample of the retained training data."""
    import numpy as np

    if path is not None:
        return _user_images(path, bundle, "--local-data")
    keep = np.flatnonzero(~np.isin(bundle.train.y, forgotten))
    rng = np.random.default_rng(seed)
    return bundle.train.subset(np.sort(rng.choice(keep, min(limit, len(keep)), replace=False)))


def _task(
    bundle: Any,
    model: Any,
    reference: Any,
    reference_path: Path,
    local: Any,
    forget: Any,
    classes: list[int],
) -> Any:
    from fedforget.verification import VerificationTask

    return VerificationTask(
        model=model,
        reference=reference,
        reference_name=f"model before unlearning ({reference_path.name})",
        num_classes=bundle.num_classes,
        local_data=local,
        forget=forget,
        forgotten_classes=tuple(sorted(set(classes))),
    )


def _run_verifier(name: str, task: Any, options: dict[str, Any], out: Path) -> Any:
    """Build, check and run a verifier with a progress display; write its files into ``out``.

    A verification runs for minutes; on a terminal it shows a bar, on a pipe (a log, CI)
    where a bar draws nothing, it logs lines instead (:class:`PhaseLog`).
    """
    from rich.console import Console
    from rich.progress import Progress

    from fedforget.verification import build_verifier

    verifier = build_verifier(name, **options)
    try:
        verifier.check(task)
    except ValueError as err:
        raise ConfigError(str(err).splitlines()[0]) from None
    if not Console().is_terminal:
        result = verifier.verify(task, PhaseLog(name))
        result.write(out)
        return result
    with Progress(transient=True) as bar:
        tasks: dict[str, Any] = {}

        def progress(phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{name}: {phase}", total=total)
            bar.update(tasks[phase], completed=step)

        result = verifier.verify(task, progress)
    result.write(out)
    return result


class PhaseLog:
    """A verifier's progress as lines, for output that is not a terminal.

    A line when a phase starts and each time it advances by :data:`PIPED_LOG_SHARE` of its
    steps (and at its end): the phase, its steps, elapsed seconds and its metrics, so that
    a piped run of many minutes shows that it advances and how far it is.
    """

    def __init__(self, name: str) -> None:
        import time

        self.name = name
        self.clock = time.perf_counter
        self.started = self.clock()
        self.logged: dict[str, int] = {}

    def __call__(self, phase: str, step: int, total: int, metrics: dict[str, float]) -> None:
        """Log ``step`` of ``total`` if it is a phase's first, last or next share's step."""
        every = max(1, round(total * PIPED_LOG_SHARE))
        last = self.logged.get(phase)
        if last is not None and step < total and step - last < every:
            return
        self.logged[phase] = step
        values = "  ".join(f"{key} {value:.3f}" for key, value in metrics.items())
        seconds = self.clock() - self.started
        label = phase if phase.startswith(self.name) else f"{self.name}: {phase}"
        line = f"{label} {step}/{total} ({step / max(total, 1):.0%}) {seconds:.0f} s"
        typer.echo(f"{line}  {values}".rstrip())
