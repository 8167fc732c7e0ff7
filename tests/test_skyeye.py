"""Skyeye verifier (paper 000, section IV.B): networks, losses, decision, end to end on digits."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch
from torch.nn import functional as F

from fedforget.data import ArrayDataset, load_dataset
from fedforget.data.deletion import apply_trigger
from fedforget.models import ClassifierModel, build_model
from fedforget.training import train_local
from fedforget.verification.networks import build_gan
from fedforget.verification.skyeye import (
    SKYEYE_COMPARISON_FILE,
    SKYEYE_GRID_FILE,
    SKYEYE_JSON_FILE,
    SkyeyeConfig,
    SkyeyeThresholds,
    decide,
    discriminator_loss,
    generate,
    generator_loss,
    recognition_rates,
    skyeye_verify,
    trigger_report,
    write_skyeye,
)

FORGET_CLASS = 3
JSON_KEYS = {"verdict", "recognition", "forgotten_classes", "thresholds", "judge", "seconds"}
TINY = SkyeyeConfig(
    steps=150, batch_size=32, width=16, samples_per_class=20, grid_samples=4, device="cpu"
)

# --------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "shape"),
    [
        ("paper", (1, 28, 28)),
        ("paper", (1, 64, 64)),
        ("dcgan", (1, 28, 28)),
        ("dcgan", (1, 64, 64)),
        ("dcgan", (1, 8, 8)),
        ("dcgan", (3, 32, 32)),
        ("dcgan", (2, 7, 9)),
    ],
)
def test_network_shapes(architecture: str, shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    classes = 40 if shape == (1, 64, 64) else 10
    generator, discriminator = build_gan(architecture, classes, shape, z_dim=100, width=8)
    assert generator.image_shape == shape and generator.num_classes == classes
    images = generator(torch.randn(3, 100), torch.tensor([0, 1, classes - 1]))
    assert images.shape == (3, *shape)
    assert float(images.detach().min()) >= 0.0 and float(images.detach().max()) <= 1.0
    logits = discriminator(images)
    assert logits.shape == (3,)
    logits.sum().backward()  # differentiable from D's output back to G's parameters
    assert all(p.grad is not None for p in generator.parameters())


def test_paper_networks_follow_appendix_c() -> None:
    generator, discriminator = build_gan("paper", 10, (1, 28, 28))
    linears = [m for m in discriminator.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(3136, 1024), (1024, 1)]
    assert generator.noise_map.out_features == 6272 and generator.label_map.out_features == 49
    _, att = build_gan("paper", 40, (1, 64, 64))
    linears = [m for m in att.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(8192, 1024), (1024, 1)]


def test_build_gan_rejects_bad_requests() -> None:
    with pytest.raises(ValueError, match="Appendix C"):
        build_gan("paper", 10, (3, 32, 32))
    with pytest.raises(ValueError, match="unknown architecture"):
        build_gan("vae", 10, (1, 28, 28))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="H, W >= 4"):
        build_gan("dcgan", 10, (1, 3, 8))


# --------------------------------------------------------------------------------------
# Losses (Eq. 10, 11)
# --------------------------------------------------------------------------------------


def test_generator_loss_is_eq_10() -> None:
    fake_logits = torch.tensor([0.3, -1.2, 2.0])
    class_logits = torch.tensor([[2.0, 0.1, -1.0], [0.0, 0.5, 0.2], [1.0, 1.0, 3.0]])
    y = torch.tensor([0, 1, 2])
    loss, adv, ce = generator_loss(fake_logits, class_logits, y, mu_d=0.5, mu_c=0.25)
    d = torch.sigmoid(fake_logits)
    softmax = torch.softmax(class_logits, dim=1)
    expected_adv = -torch.log(d).mean()
    expected_ce = -torch.log(softmax[torch.arange(3), y]).mean()  # -y log C with one-hot y
    assert torch.isclose(adv, expected_adv) and torch.isclose(ce, expected_ce)
    assert torch.isclose(loss, 0.5 * expected_adv + 0.25 * expected_ce)


def test_discriminator_loss_is_eq_11() -> None:
    fake_logits, real_logits = torch.tensor([0.4, -2.0]), torch.tensor([1.5, -0.3])
    loss, fake, real = discriminator_loss(fake_logits, real_logits, mu_f=0.5, mu_r=0.7)
    expected_fake = -torch.log(1 - torch.sigmoid(fake_logits)).mean()
    expected_real = -torch.log(torch.sigmoid(real_logits)).mean()
    assert torch.isclose(fake, expected_fake) and torch.isclose(real, expected_real)
    assert torch.isclose(loss, 0.5 * expected_fake + 0.7 * expected_real)


def test_losses_stay_finite_for_saturated_discriminators() -> None:
    big = torch.tensor([80.0, -80.0])
    assert torch.isfinite(discriminator_loss(big, -big, 0.5, 0.5)[0])
    logits = torch.zeros(2, 3)
    assert torch.isfinite(generator_loss(-big, logits, torch.tensor([0, 1]), 0.5, 0.5)[0])
    assert torch.isclose(discriminator_loss(big, big, 1.0, 0.0)[0], F.softplus(big).mean())


# --------------------------------------------------------------------------------------
# Decision
# --------------------------------------------------------------------------------------


def _predictions(rates: list[float], n: int = 20) -> np.ndarray:
    """Judge labels (C, n): a share ``rates[c]`` of row c labelled c, the rest c + 1."""
    rows = []
    for c, rate in enumerate(rates):
        hits = round(rate * n)
        rows.append([c] * hits + [(c + 1) % len(rates)] * (n - hits))
    return np.array(rows)


def test_recognition_rates_from_judge_labels() -> None:
    rates = recognition_rates(_predictions([1.0, 0.5, 0.05, 0.9]))
    assert rates == {0: 1.0, 1: 0.5, 2: 0.05, 3: 0.9}
    with pytest.raises(ValueError, match="classes, samples"):
        recognition_rates(np.zeros(5))


def test_verdict_forgotten() -> None:
    rec = recognition_rates(_predictions([0.95, 0.9, 0.9, 0.1, 0.85, 0.95]))
    verdict, reasons = decide(rec, [FORGET_CLASS])
    assert verdict == "forgotten" and reasons == []


def test_verdict_not_forgotten_when_class_still_drawn() -> None:
    rec = recognition_rates(_predictions([0.95, 0.9, 0.9, 0.6, 0.85, 0.95]))
    verdict, reasons = decide(rec, [FORGET_CLASS])
    assert verdict == "not_forgotten"
    assert any("class 3 still recognised" in r for r in reasons)


def test_verdict_not_forgotten_when_a_retained_class_is_under_the_floor() -> None:
    # mean of the retained classes is high, but class 5 is under retained_min
    rec = {0: 1.0, 1: 1.0, 2: 1.0, 3: 0.0, 4: 1.0, 5: 0.45, 6: 1.0, 7: 1.0, 8: 1.0, 9: 1.0}
    verdict, reasons = decide(rec, [FORGET_CLASS])
    assert verdict == "not_forgotten"
    assert reasons == ["retained class 5 recognised at 45% < 50%"]
    # a looser floor accepts it
    loose = SkyeyeThresholds(retained_min=0.4)
    assert decide(rec, [FORGET_CLASS], loose)[0] == "forgotten"


def test_verdict_not_forgotten_when_the_generator_is_not_conclusive() -> None:
    rec = {0: 0.7, 1: 0.7, 2: 0.7, 3: 0.0}
    verdict, reasons = decide(rec, [FORGET_CLASS])
    assert verdict == "not_forgotten" and "not conclusive" in reasons[0]


def test_thresholds_are_inclusive_and_validated() -> None:
    rec = {0: 0.85, 1: 0.85, 2: 0.2}
    assert decide(rec, [2])[0] == "forgotten"
    with pytest.raises(pydantic.ValidationError):
        SkyeyeThresholds(forgotten_max=1.5)
    with pytest.raises(ValueError, match="no recognition"):
        decide(rec, [7])
    with pytest.raises(ValueError, match="nothing to verify"):
        decide(rec, [])


def test_trigger_report_and_backdoor_verdict() -> None:
    clean = np.zeros((4, 1, 8, 8), dtype=np.float32)
    images = np.concatenate([apply_trigger(clean[:3], 2), clean[3:], clean])
    labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    report = trigger_report(images, labels, target=0, size=2)
    assert report["target_mean"] == pytest.approx(0.75) and report["other_mean"] == 0.0
    assert report["target_share"] == pytest.approx(0.75) and report["other_share"] == 0.0
    assert report["present"] and report["difference"] == pytest.approx(0.75)
    rec = {0: 0.95, 1: 0.95, 2: 0.9}
    verdict, reasons = decide(rec, [], trigger=report)
    assert verdict == "not_forgotten" and "carry the trigger" in reasons[0]
    gone = trigger_report(np.concatenate([clean, clean]), labels, target=0, size=2)
    assert not gone["present"]
    assert decide(rec, [], trigger=gone)[0] == "forgotten"


def test_config_forbids_unknown_keys_and_keeps_the_paper_values() -> None:
    with pytest.raises(pydantic.ValidationError):
        SkyeyeConfig(mu_x=0.5)
    with pytest.raises(pydantic.ValidationError):
        SkyeyeConfig(architecture="vae")
    cfg = SkyeyeConfig()
    assert (cfg.mu_d, cfg.mu_c, cfg.lr, cfg.batch_size, cfg.z_dim) == (0.5, 0.5, 3e-4, 100, 100)
    assert cfg.architecture == "dcgan"


# --------------------------------------------------------------------------------------
# End to end on sklearn digits (8x8)
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> ArrayDataset:
    return load_dataset("digits").train


def _trained(data: ArrayDataset, seed: int) -> ClassifierModel:
    torch.manual_seed(seed)
    model = build_model("lenet5", 10, 1, 8)
    train_local(model, data, epochs=10, lr=0.05, batch_size=32, seed=seed, momentum=0.9)
    return model.eval()


@pytest.fixture(scope="module")
def models(digits: ArrayDataset) -> tuple[ClassifierModel, ClassifierModel]:
    """(original model trained on every class, a model that never saw class 3)."""
    without = digits.subset(np.flatnonzero(digits.y != FORGET_CLASS))
    return _trained(digits, 0), _trained(without, 1)


def test_end_to_end_writes_json_and_pictures(
    digits: ArrayDataset, models: tuple[ClassifierModel, ClassifierModel], tmp_path: Path
) -> None:
    original, unlearned = models
    before_weights = [p.detach().clone() for p in unlearned.parameters()]
    calls: list[tuple[int, int]] = []
    kwargs = {"num_classes": 10, "forgotten_classes": [FORGET_CLASS], "config": TINY}
    local = digits.subset(np.flatnonzero(digits.y != FORGET_CLASS))
    before = skyeye_verify(original, local, original, judge_name="original", **kwargs)
    after = skyeye_verify(
        unlearned,
        local,
        original,
        judge_name="original",
        progress=lambda phase, step, total, metrics: calls.append((step, total)),
        **kwargs,
    )
    assert calls[-1] == (150, 150) and len(calls) == 2  # log_every 100, then the last step
    assert after.steps == 150 and after.samples.shape == (10, 20, 1, 8, 8)
    assert all(
        torch.equal(a, b) for a, b in zip(before_weights, unlearned.parameters(), strict=True)
    )

    paths = write_skyeye(after, tmp_path, before=before.generator, real=digits)
    written = json.loads((tmp_path / SKYEYE_JSON_FILE).read_text())
    assert set(written) == JSON_KEYS
    assert written["verdict"] in {"forgotten", "not_forgotten"}
    assert set(written["recognition"]) == {str(c) for c in range(10)}
    assert written["forgotten_classes"] == [FORGET_CLASS] and written["judge"] == "original"
    assert written["thresholds"]["forgotten_max"] == 0.2
    for name in (SKYEYE_GRID_FILE, SKYEYE_COMPARISON_FILE):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert paths["grid"] == tmp_path / SKYEYE_GRID_FILE
    # the generator draws what the model knows: better for the original model's class 3
    assert before.recognition[FORGET_CLASS] >= after.recognition[FORGET_CLASS]


def test_backdoor_run_reports_the_trigger_and_is_seeded(
    digits: ArrayDataset, models: tuple[ClassifierModel, ClassifierModel], tmp_path: Path
) -> None:
    original, _ = models
    cfg = TINY.model_copy(update={"steps": 20, "samples_per_class": 5})
    runs = [
        skyeye_verify(
            original,
            digits,
            original,
            num_classes=10,
            backdoor_target=0,
            trigger_size=2,
            config=cfg,
        )
        for _ in range(2)
    ]
    assert runs[0].recognition == runs[1].recognition
    np.testing.assert_array_equal(runs[0].samples, runs[1].samples)
    written = runs[0].to_json()
    assert set(written) == JSON_KEYS | {"trigger"}
    assert written["forgotten_classes"] == [] and written["trigger"]["target"] == 0
    write_skyeye(runs[0], tmp_path)
    assert json.loads((tmp_path / SKYEYE_JSON_FILE).read_text())["trigger"]["size"] == 2


def test_time_budget_and_generate(digits: ArrayDataset, models) -> None:
    original, _ = models
    cfg = TINY.model_copy(update={"max_seconds": 1e-9, "samples_per_class": 2})
    result = skyeye_verify(
        original, digits, original, num_classes=10, forgotten_classes=[3], config=cfg
    )
    assert result.steps == 0
    images = generate(result.generator, [0, 1, 2], seed=3)
    assert images.shape == (3, 1, 8, 8) and images.dtype == np.float32
    np.testing.assert_array_equal(images, generate(result.generator, [0, 1, 2], seed=3))
    with pytest.raises(ValueError, match="nothing to verify"):
        skyeye_verify(original, digits, original, num_classes=10, config=cfg)
    with pytest.raises(ValueError, match="out of range"):
        skyeye_verify(
            original, digits, original, num_classes=10, forgotten_classes=[10], config=cfg
        )
