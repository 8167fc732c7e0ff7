"""``fedforget verify`` as the README writes it, on weights of a dataset other than MNIST.

A user verified digits models with the README's command (no ``--dataset``) and was told the
weights do not fit 1x28x28 images, with no hint of the flag; the run, piped to a log, showed
nothing for minutes. These tests run the README's form on digits weights end to end.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fedforget.cli import main
from fedforget.cli.verify import PhaseLog, dataset_of


def _weights(path: Path, channels: int, size: int, classes: int) -> str:
    import torch

    from fedforget.models import build_model

    torch.manual_seed(0)
    torch.save(build_model("lenet5", classes, channels, size).state_dict(), path)
    return str(path)


def _refusal(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """The one stderr line of a command refused with exit code 2."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1, err
    return err


def test_the_readme_form_on_digits_weights_infers_digits_and_logs_on_a_pipe(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    after = _weights(tmp_path / "after.pt", 1, 8, 10)
    before = _weights(tmp_path / "before.pt", 1, 8, 10)
    readme = ["verify", "skyeye", "--model", after, "--reference", before, "--forget-class", "3"]
    quick = ["--steps", "4", "--samples-per-class", "2", "--local-samples", "200"]
    main([*readme, *quick, "--out", str(tmp_path / "verify")])
    out = capsys.readouterr().out
    assert "dataset: digits" in out
    # capsys is not a terminal: the progress is logged as lines, each phase to its end
    assert "skyeye 4/4 (100%)" in out and "skyeye-before 4/4 (100%)" in out
    report = json.loads((tmp_path / "verify" / "skyeye.json").read_text())
    assert report["forgotten_classes"] == [3]


def test_mnist_shaped_weights_keep_mnist_as_the_dataset(tmp_path: Path) -> None:
    weights = Path(_weights(tmp_path / "m.pt", 1, 28, 10))
    assert dataset_of(None, "lenet5", weights) == "mnist"  # fashion-mnist fits too
    assert dataset_of("fashion-mnist", "lenet5", weights) == "fashion-mnist"


def test_weights_of_another_dataset_than_the_one_named_name_the_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    mnist = _weights(tmp_path / "m.pt", 1, 28, 10)
    args = ["verify", "spd", "--dataset", "digits", "--model", mnist, "--source", mnist]
    err = _refusal([*args, "--forget-class", "3"], capsys)
    assert "they fit --dataset mnist or fashion-mnist" in err, err


def test_weights_that_fit_no_built_in_dataset_name_the_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    odd = _weights(tmp_path / "odd.pt", 1, 16, 7)
    args = ["verify", "skyeye", "--model", odd, "--reference", odd, "--forget-class", "3"]
    err = _refusal(args, capsys)
    assert "--dataset" in err and "--model-name" in err, err


def test_a_piped_phase_is_logged_at_its_start_every_tenth_and_at_its_end(
    capsys: pytest.CaptureFixture[str],
) -> None:
    log = PhaseLog("skyeye")
    for step in range(100, 2001, 100):
        log("skyeye", step, 2000, {"c_acc": 0.5})
    log("spd", 1, 1, {})
    lines = capsys.readouterr().out.splitlines()
    steps = [*range(100, 2001, 200), 2000]
    assert [line.split()[1] for line in lines[:-1]] == [f"{s}/2000" for s in steps]
    assert lines[-1].startswith("skyeye: spd 1/1 (100%)")


def test_a_data_error_is_said_before_the_weights_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = str(tmp_path / "nope.pt")
    args = ["verify", "spd", "--dataset", "npz", "--model", missing, "--source", missing]
    err = _refusal([*args, "--forget-class", "3"], capsys)
    assert "needs a path" in err, err
