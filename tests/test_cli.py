"""Every user error is one line on stderr and exit code 2, before any simulation starts."""

from __future__ import annotations

import pytest

from fedforget.cli import main, parse_options, parse_share

DIGITS = [
    "simulate",
    "--dataset",
    "digits",
    "--clients",
    "4",
    "--rounds",
    "3",
    "--deletion-round",
    "2",
]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--delete", "0%"], "strictly between"),
        (["--delete", "100%"], "strictly between"),
        (["--delete", "-3%"], "strictly between"),
        (["--delete", "lots"], "6% or 0.06"),
        (["--clients", "1"], "at least 2 clients"),
        (["--dataset", "imagenet"], "unknown dataset 'imagenet'"),
        (["--strategy", "pga"], "pga supports only mode(s) client"),
        (["--model", "vgg99"], "unknown model 'vgg99'"),
        (["--strategy", "magic"], "unknown strategy 'magic'"),
        (["--mode", "erase"], "deletion.mode"),
        (["--mode", "class", "--forget-class", "12"], "forget class 12 is out of range"),
        (["--mode", "class"], "--forget-class"),
        (["--delete", "50%", "--deleting-clients", "0"], "needs more than"),
        (["--rounds", "3", "--deletion-round", "4"], "beyond the last round"),
        (["--dataset", "npz", "--data-path", "/nonexistent/data.npz"], "data.npz"),
        (["--clients", "many"], "many"),
        (["--option", "distill.epochs=0"], "distill option epochs"),
        (["--option", "lau.no_such=1"], "lau option no_such"),
        (["--option", "magic.x=1"], "unknown strategy 'magic'"),
        (["--option", "noequals"], "NAME.KEY=VALUE"),
    ],
)
def test_bad_input_gives_one_line_and_exit_code_2(capsys, tmp_path, args, fragment):
    with pytest.raises(SystemExit) as info:
        main([*DIGITS, "--out", str(tmp_path), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("error: ")
    assert fragment in err


def test_unreadable_custom_file_is_a_one_line_error(capsys, tmp_path):
    broken = tmp_path / "broken.npz"
    broken.write_bytes(b"not a zip file")
    with pytest.raises(SystemExit) as info:
        main([*DIGITS, "--dataset", "npz", "--data-path", str(broken)])
    assert info.value.code == 2
    assert "broken.npz" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "value"), [("6%", 0.06), ("0.06", 0.06), (" 12.5% ", 0.125)])
def test_parse_share(text, value):
    assert parse_share(text) == pytest.approx(value)


def test_list_names_the_registries(capsys):
    main(["list"])
    out = capsys.readouterr().out
    assert "mnist" in out and "lenet5" in out and "distill" in out and "retrain" in out
    assert "skyeye" in out and "spd" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--strategies", "distill,magic"], "unknown strategy 'magic'"),
        (["--strategies", ","], "at least one strategy"),
        (["--strategies", "lau", "--option", "lau.no_such=1"], "lau option no_such"),
        (["--strategies", "lau", "--no-such-flag"], "--no-such-flag"),
        (["--strategies", "lau", "--delete", "0%"], "strictly between"),
        (["--deletion-round", "1,2"], "sequential deletions"),
    ],
)
def test_compare_errors_are_one_line_too(capsys, tmp_path, args, fragment):
    with pytest.raises(SystemExit) as info:
        main(["compare", *DIGITS[1:], "--out", str(tmp_path), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_options_go_to_the_named_method_or_the_chosen_strategy():
    options = parse_options(
        ["lau.alpha=0.5", "epochs=3", "nad.mode=fast", "x.flag=true"], "distill"
    )
    assert options == {
        "lau": {"alpha": 0.5},
        "distill": {"epochs": 3},
        "nad": {"mode": "fast"},
        "x": {"flag": True},
    }


def _saved_digits_model(path):
    import torch

    from fedforget.models import build_model

    torch.manual_seed(0)
    torch.save(build_model("lenet5", 10, 1, 8).state_dict(), path)
    return str(path)


def test_verify_spd_writes_the_degree(tmp_path, capsys):
    import json

    model = _saved_digits_model(tmp_path / "m.pt")
    args = ["verify", "spd", "--dataset", "digits", "--model", model, "--source", model]
    main([*args, "--forget-class", "3", "--epochs", "1", "--samples", "64", "--out", str(tmp_path)])
    result = json.loads((tmp_path / "spd.json").read_text())
    assert result["degree"] == 0.0  # a model against itself has forgotten nothing
    assert result["samples"] == 64
    assert "SPD degree 0.0000" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "--forget-class"),
        (["--forget-class", "12"], "forget class 12 is out of range"),
        (["--forget-class", "3", "--model", "/nope.pt"], "no such model file"),
        (["--forget-class", "3", "--model-name", "resnet20"], "does not hold resnet20 weights"),
    ],
)
def test_verify_errors_are_one_line(tmp_path, capsys, extra, fragment):
    model = _saved_digits_model(tmp_path / "m.pt")
    with pytest.raises(SystemExit) as info:
        main(["verify", "spd", "--dataset", "digits", "--model", model, "--source", model, *extra])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


def test_verify_skyeye_writes_the_contract(tmp_path, capsys):
    import json

    model = _saved_digits_model(tmp_path / "m.pt")
    args = ["verify", "skyeye", "--dataset", "digits", "--model", model, "--reference", model]
    tiny = ["--steps", "5", "--samples-per-class", "3", "--local-samples", "300"]
    main([*args, *tiny, "--forget-class", "3", "--out", str(tmp_path / "class")])
    report = json.loads((tmp_path / "class" / "skyeye.json").read_text())
    keys = {"verdict", "recognition", "forgotten_classes", "thresholds", "judge", "seconds"}
    assert keys <= set(report) and report["forgotten_classes"] == [3]
    assert "before_recognition" in report  # the control run with the reference model
    assert (tmp_path / "class" / "skyeye_before_after.png").is_file()
    assert "Skyeye verdict" in capsys.readouterr().out
    backdoor = ["--backdoor-target", "0", "--trigger-size", "2", "--no-control"]
    main([*args, *tiny, *backdoor, "--out", str(tmp_path / "bd")])
    report = json.loads((tmp_path / "bd" / "skyeye.json").read_text())
    assert report["trigger"]["target"] == 0 and "before_recognition" not in report


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ([], "--forget-class C or --backdoor-target T"),
        (["--backdoor-target", "10"], "backdoor target 10 is out of range"),
        (["--forget-class", "3", "--architecture", "vae"], "skyeye option architecture"),
        (["--forget-class", "3", "--local-data", "/nope.npz"], "/nope.npz: expected an .npz"),
    ],
)
def test_verify_skyeye_errors_are_one_line(tmp_path, capsys, extra, fragment):
    model = _saved_digits_model(tmp_path / "m.pt")
    with pytest.raises(SystemExit) as info:
        main(
            [
                "verify",
                "skyeye",
                "--dataset",
                "digits",
                "--model",
                model,
                "--reference",
                model,
                *extra,
            ]
        )
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err


class _StopError(Exception):
    """Raised by a stand-in compare: the CLI got as far as running the comparison."""


@pytest.mark.parametrize(("args", "expected"), [([], 3), (["--after-rounds", "0"], 0)])
def test_compare_continues_three_rounds_after_the_deletion_unless_told(
    monkeypatch, tmp_path, args, expected
):
    import fedforget.simulations.compare as compare_module

    seen = []

    def fake_compare(config, names, display=None, after_rounds=-1):
        seen.append(after_rounds)
        raise _StopError

    monkeypatch.setattr(compare_module, "compare", fake_compare)
    with pytest.raises(_StopError):
        main(["compare", *DIGITS[1:], "--out", str(tmp_path / "run"), "--quiet", *args])
    assert seen == [expected]


def test_sequential_deletions_take_rounds_and_each_steps_clients():
    from fedforget.cli import _simulate_params, config_from_options

    args = ["--dataset", "digits", "--clients", "4", "--rounds", "4", "--mode", "client"]
    config = config_from_options(
        _simulate_params([*args, "--deletion-round", "2,3", "--deleting-clients", "1/2,3"])
    )
    assert config.deletion.rounds == [2, 3]
    assert config.deletion_steps() == [(2, [1]), (3, [2, 3])]
    assert [config.deletion_round_of(c) for c in range(4)] == [2, 2, 3, 3]
    single = config_from_options(_simulate_params([*args, "--deletion-round", "3"]))
    assert single.deletion.round == 3 and single.deletion.rounds == [3]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--deletion-round", "3,2"], "must increase"),
        (["--deletion-round", "2,3", "--deleting-clients", "1/2/3"], "3 groups"),
        (["--deletion-round", "2,3", "--deleting-clients", "1/1"], "one step only"),
        (["--deletion-round", "2,x"], "deletion rounds"),
    ],
)
def test_bad_sequential_deletions_are_one_line(capsys, args, fragment):
    with pytest.raises(SystemExit) as info:
        main([*DIGITS[:-2], "--rounds", "4", *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
