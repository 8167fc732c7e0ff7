"""The GAN task end to end on digits: a federated conditional GAN, a deletion, GAN unlearning."""

from __future__ import annotations

import json

import pytest

from fedforget.cli import main
from fedforget.config import ConfigError
from fedforget.data import build_federation
from fedforget.simulations.gan import ORIGINAL, gan_compare, parse_gan_strategies
from fedforget.simulations.runner import simulate

pytestmark = pytest.mark.slow

QUICK_CASCADE = {"max_iterations": 30, "check_every": 10}


def _gan_config(make_config, out, **deletion):
    return make_config(
        task="gan",
        strategy="cascaded",
        out=out,
        train={"rounds": 3, "fraction_train": 0.5},  # half the clients train each round
        deletion={"round": 2, **deletion},
        gan={"judge_epochs": 5},
        methods={"options": {"cascaded": QUICK_CASCADE}},
    )


@pytest.fixture(scope="module")
def class_run(tmp_path_factory, make_config):
    config = _gan_config(
        make_config, tmp_path_factory.mktemp("gan-class"), mode="class", forget_classes=[3]
    )
    return config, simulate(config)


@pytest.fixture(scope="module")
def item_comparison(tmp_path_factory, make_config):
    config = _gan_config(make_config, tmp_path_factory.mktemp("gan-item"), mode="random", count=40)
    return config, gan_compare(config, ["cascaded", "cascaded-zero"])


def test_class_deletion_runs_every_phase_and_drops_the_class(class_run):
    config, summary = class_run
    assert set(summary.phases) == {"before_deletion", "after_unlearning", "final", "reference"}
    assert summary.deletion.round == 2
    # every client's 3s, also from the clients the deletion round did not sample
    threes = int((build_federation(config).train.y == 3).sum())
    received = summary.deletion.need_figure("forget", "samples_received")
    assert summary.deletion.forget_samples == received == threes
    assert summary.deletion.need_figure("retain", "samples") == 4 * 150  # few-shot learning
    assert summary.unlearning["iterations"] >= 1
    stored = json.loads((config.out / "summary.json").read_text())
    assert stored["phases"]["final"]["forgotten_recognition"] is not None
    assert (config.out / "samples.png").stat().st_size > 0
    assert (config.out / "gan-final.pt").is_file()


def test_cascaded_unlearning_lowers_the_discriminator_on_the_deleted_class(class_run):
    _, summary = class_run
    before = summary.phases["before_deletion"].auc
    after = summary.phases["after_unlearning"].auc
    assert after > before + 0.2


def test_item_comparison_has_every_row_and_speedups(item_comparison):
    config, result = item_comparison
    assert [row["strategy"] for row in result.rows] == [
        ORIGINAL,
        "retrain",
        "cascaded",
        "cascaded-zero",
    ]
    assert result.row("retrain")["speedup_vs_retrain"] == pytest.approx(1.0)
    for name in ("cascaded", "cascaded-zero"):
        # every branch received the same 40 images: no branch saw another one's deletion
        assert result.details[name]["forget_samples_received"] == 40, name
        assert result.row(name)["auc"] > result.row(ORIGINAL)["auc"], name
    assert result.details["cascaded"]["learning_samples"] == 4 * 150
    assert result.details["cascaded-zero"]["learning_samples"] == 0  # zero-shot asks for none
    markdown = (config.out / "gan_compare.md").read_text()
    assert "not Inception-FID" in markdown
    assert "| cascaded-zero |" in markdown


def test_gan_strategy_names_are_checked():
    assert parse_gan_strategies("cascaded, retrain,cascaded") == ["cascaded", "retrain"]
    assert "cascaded-other-class" in parse_gan_strategies("all")
    with pytest.raises(ConfigError, match="unknown GAN strategy 'distill'"):
        parse_gan_strategies("distill")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--mode", "backdoor"], "deletes images"),
        (["--strategy", "distill"], "unknown GAN strategy"),
        (["--verify", "skyeye", "--mode", "class", "--forget-class", "3"], "--verify checks"),
        (["--option", "cascaded.substitute=other-class", "--mode", "item"], "other-class"),
    ],
)
def test_gan_task_user_errors_are_one_line(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["simulate", "--task", "gan", "--dataset", "digits", "--clients", "4", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert len(err.splitlines()) == 1


def test_delete_takes_a_count_and_item_means_random():
    from fedforget.cli import parse_delete

    assert parse_delete("64") == {"count": 64}
    assert parse_delete("6%") == {"share": pytest.approx(0.06)}
    config = _cli_config(["--task", "gan", "--mode", "item", "--delete", "64"])
    assert (config.deletion.mode, config.deletion.count, config.strategy) == (
        "random",
        64,
        "cascaded",
    )
    assert _cli_config([]).deletion.mode == "backdoor"


def _cli_config(args):
    from fedforget.cli import _simulate_params, config_from_options

    return config_from_options(_simulate_params(["--dataset", "digits", *args]))


@pytest.fixture(scope="module")
def mugan_comparison(tmp_path_factory, make_config):
    from fedforget.simulations.compare import compare

    config = make_config(
        out=tmp_path_factory.mktemp("mugan"),
        train={"rounds": 3},
        deletion={"mode": "class", "forget_classes": [3], "round": 3},
        gan={"epochs": 2, "generator_clients": 1},
    )
    return compare(config, ["mugan", "distill"], after_rounds=0)


def test_mugan_generator_is_trained_by_the_clients_alongside_the_model(mugan_comparison):
    details = mugan_comparison.details
    assert details["mugan"]["needs"] == ["generator"]
    generator = details["mugan"]["need_figures"]["generator"]
    assert generator["training_client_seconds"] > 0  # the clients paid for it
    assert generator["bytes"] > 100_000
    assert "forget" not in details["mugan"]["need_figures"]  # no real sample reached the server
    assert "generator" not in details["distill"]["need_figures"]
    row = mugan_comparison.row("mugan")  # the compare.csv column sums the training-time parts
    assert row["training_client_seconds"] == generator["training_client_seconds"]
    assert mugan_comparison.row("distill")["training_client_seconds"] == 0
    assert mugan_comparison.row("mugan")["forget_test_accuracy"] < 0.5
