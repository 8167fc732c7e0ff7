"""End to end through Flower's real simulation engine (Ray actors) on digits."""

from __future__ import annotations

import json

import pytest
import torch

from fedforget.data import build_federation
from fedforget.models import build_model
from fedforget.report.recorder import MODEL_FILE, PLOT_FILE, ROUNDS_FILE, SUMMARY_FILE
from fedforget.simulations.runner import simulate
from fedforget.training import accuracy

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def backdoor_run(tmp_path_factory, make_config):
    out = tmp_path_factory.mktemp("backdoor")
    config = make_config(
        out=out,
        train={"rounds": 4, "local_epochs": 3, "batch_size": 16},  # learns (batch 32: ~17 %)
        deletion={"round": 3, "share": 0.1},
        unlearning={"batch_size": 16},
        verify={"method": "skyeye", "clients": 2},
        methods={"options": {"skyeye": TINY_SKYEYE}},
    )
    return config, simulate(config)


TINY_SKYEYE = {"steps": 30, "batch_size": 32, "width": 8, "samples_per_class": 5}


def test_the_run_writes_every_output(backdoor_run):
    config, summary = backdoor_run
    out = config.out
    for name in (SUMMARY_FILE, ROUNDS_FILE, MODEL_FILE, PLOT_FILE):
        assert (out / name).is_file(), name
    stored = json.loads((out / SUMMARY_FILE).read_text())
    for phase in ("before_deletion", "after_unlearning", "after_recovery", "final"):
        assert stored["phases"][phase]["test_accuracy"] is not None
    assert stored["reference"]["final"]["backdoor_success"] is not None
    assert stored["reference"]["jsd"] >= 0 and stored["reference"]["l2"] > 0
    assert len(stored["timings"]["round_seconds"]) == config.train.rounds
    state = torch.load(out / MODEL_FILE, weights_only=True)
    model = build_model("lenet5", 10, 1, 8)
    model.load_state_dict(state)  # strict: the saved weights are the model's, all of them
    assert accuracy(model, build_federation(config).test) == pytest.approx(
        summary.phases.final.test_accuracy
    )
    rows = [json.loads(line) for line in (out / ROUNDS_FILE).read_text().splitlines()]
    assert sum(r["phase"] == "federated" for r in rows) == config.train.rounds
    assert sum(r["phase"] == "reference" for r in rows) == config.train.rounds


def test_deleted_samples_are_never_trained_on_after_the_deletion(backdoor_run):
    config, summary = backdoor_run
    assert summary.deletion.round == config.deletion.round
    assert summary.deletion.forget_samples == round(0.1 * 1437)
    # D_f was trained on before its deletion (the count is real) and never after
    assert summary.bookkeeping.deleted_passes_before_deletion > 0
    assert summary.bookkeeping.deleted_passes_after_deletion == 0


def test_the_backdoor_was_learned_and_unlearned(backdoor_run):
    _, summary = backdoor_run
    before = summary.phases.before_deletion
    assert before.test_accuracy > 0.5 and summary.deletion.skipped is None  # it learned
    assert before.backdoor_success > 0.5
    assert summary.phases.after_unlearning.backdoor_success < before.backdoor_success / 2
    assert summary.reference.final.backdoor_success < before.backdoor_success


def test_the_deleting_clients_verified_the_final_model(backdoor_run):
    config, summary = backdoor_run
    reports = summary.verification
    assert [r["client"] for r in reports] == [0, 1]  # the first two deleting clients
    for report in reports:
        assert report["method"] == "skyeye" and "error" not in report, report
        assert report["verdict"] in ("forgotten", "not_forgotten")
        assert report["trigger"]["target"] == config.deletion.backdoor_target
        assert set(report["before_recognition"]) == {str(c) for c in range(10)}
        folder = config.out / "verification" / f"client-{report['client']}"
        stored = json.loads((folder / "skyeye.json").read_text())
        assert stored["recognition"] == report["recognition"]
        for picture in ("skyeye_grid.png", "skyeye_before_after.png"):
            assert (folder / picture).read_bytes()[:4] == b"\x89PNG"
    stored = json.loads((config.out / SUMMARY_FILE).read_text())
    assert stored["verification"] == reports


def test_client_mode_with_retrain_strategy(tmp_path, make_config):
    config = make_config(
        out=tmp_path,
        strategy="retrain",
        reference="none",
        deletion={"mode": "client", "deleting_clients": [1]},
        verify={"method": "spd"},
        methods={"options": {"spd": {"epochs": 1, "max_samples": 64}}},
    )
    summary = simulate(config)
    assert summary.deletion.clients == [1]
    (report,) = summary.verification
    assert report["client"] == 1 and report["samples"] == 64
    assert report["degree"] == pytest.approx(
        report["source_accuracy"] - report["unlearned_accuracy"]
    )
    assert (tmp_path / "verification" / "client-1" / "spd.json").is_file()
    assert summary.reference is None
    assert summary.bookkeeping.deleted_passes_after_deletion == 0
    # the retrain strategy reran the deletion round's rounds from the initial weights
    rows = [json.loads(line) for line in (tmp_path / ROUNDS_FILE).read_text().splitlines()]
    assert sum(r["phase"] == "retrain" for r in rows) == config.deletion.round


def test_federaser_replays_the_stored_updates_on_the_clients(tmp_path, make_config):
    config = make_config(
        out=tmp_path,
        strategy="federaser",
        reference="none",
        train={"rounds": 5, "local_epochs": 3},  # 2 rounds leave digits at 11 %
        deletion={"mode": "client", "deleting_clients": [1], "round": 4},
        methods={"options": {"federaser": {"calibration_ratio": 1.0}}},
    )
    summary = simulate(config)
    model_bytes = sum(
        t.numel() * t.element_size() for t in build_model("lenet5", 10, 1, 8).state_dict().values()
    )
    # every client's update of every round before the deletion was kept
    kept = config.deletion.round * config.clients * model_bytes
    assert summary.deletion.need_figure("history", "bytes") == kept
    # one calibration training on the clients per kept round, never on the deleted data
    assert summary.deletion.need_figure("rounds", "client_training_calls") == config.deletion.round
    assert summary.bookkeeping.deleted_passes_after_deletion == 0
    assert set(summary.deletion.needs) == {"history", "rounds"}  # FedEraser gets no client data
    before = summary.phases.before_deletion.test_accuracy
    assert before > 0.5  # the setup really learned
    # the model rebuilt from w_0 with calibrated updates is about as good as the original
    assert summary.phases.after_unlearning.test_accuracy > before - 0.15


def test_client_side_unlearning_keeps_d_f_on_the_nodes(tmp_path, make_config):
    config = make_config(
        out=tmp_path,
        reference="none",
        unlearn_on="client",
        # batch 32 left the model at 17 % (answering the trigger's class almost everywhere):
        # a model that learned nothing, whose deletion step only drops D_f
        train={"rounds": 4, "local_epochs": 3, "batch_size": 16},
        deletion={"round": 3, "share": 0.1, "deleting_clients": [0, 1]},
        unlearning={"batch_size": 16},
    )
    summary = simulate(config)
    assert "forget" not in summary.deletion.needs  # no D_f sample reached the server
    assert summary.deletion.clients == [0, 1]
    assert summary.phases.before_deletion.test_accuracy > 0.5  # the setup really learned
    assert summary.deletion.skipped is None
    before = summary.phases.before_deletion.backdoor_success
    assert before > 0.5
    assert summary.phases.after_unlearning.backdoor_success < before / 2
    assert summary.bookkeeping.deleted_passes_after_deletion == 0


def test_quickdrop_unlearns_a_class_on_the_clients_distilled_sets(tmp_path, make_config):
    config = make_config(
        out=tmp_path,
        strategy="quickdrop",
        reference="none",
        train={"rounds": 4, "local_epochs": 3, "batch_size": 16},
        deletion={"mode": "class", "forget_classes": [3], "round": 3},
    )
    summary = simulate(config)
    # every client distilled while it trained, and sent its set: 10 images of each class it
    # holds (digits' IID partition: all 10), 8x8 float32 images and int64 labels
    assert summary.deletion.need_figure("synthetic", "training_client_seconds") > 0
    sets = config.clients * 10 * 10 * (64 * 4 + 8)
    assert summary.deletion.need_figure("synthetic", "bytes") == sets
    _forgot_the_class_without_its_samples(summary)


def test_fedau_unlearns_a_class_with_the_clients_auxiliary_heads(tmp_path, make_config):
    config = make_config(
        out=tmp_path,
        strategy="fedau",
        reference="none",
        clients=3,
        train={"rounds": 3, "local_epochs": 3, "batch_size": 16},
        deletion={"mode": "class", "forget_classes": [3], "round": 2},
    )
    summary = simulate(config)
    # every client holds 3s, so each trained W_a while it trained and sent it at the deletion:
    # a float32 weight and bias of LeNet-5's head
    head = build_model("lenet5", 10, 1, 8).head
    head_bytes = (head.weight.numel() + head.bias.numel()) * 4
    assert summary.deletion.need_figure("auxiliary", "training_client_seconds") > 0
    assert summary.deletion.need_figure("auxiliary", "bytes") == config.clients * head_bytes
    _forgot_the_class_without_its_samples(summary)


def _forgot_the_class_without_its_samples(summary) -> None:
    """No real sample reached the server or was trained on after the deletion; the test 3s
    were learned, then halved, and the rest kept within 15 points."""
    assert "forget" not in summary.deletion.needs
    assert summary.bookkeeping.deleted_passes_after_deletion == 0
    before = summary.phases.before_deletion
    after = summary.phases.after_unlearning
    assert before.forget_test_accuracy > 0.6  # the setup really learned its 3s
    assert after.forget_test_accuracy < before.forget_test_accuracy / 2
    assert after.retain_test_accuracy > before.retain_test_accuracy - 0.15
