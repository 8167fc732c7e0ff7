"""SPD-GAN unlearning degree (paper 003, section 3.3): generator, loss, degree, output files."""

from __future__ import annotations

import json

import numpy as np
import pydantic
import pytest
import torch

from fedforget.data import ArrayDataset, load_dataset
from fedforget.models import ClassifierModel, build_model
from fedforget.training import accuracy, train_local
from fedforget.verification.spd import (
    SPD_IMAGE_FILE,
    SPD_JSON_FILE,
    PerturbationGenerator,
    SpdConfig,
    spd_degree,
    spd_loss,
    write_spd,
)

FORGET_CLASS = 3
JSON_KEYS = {"degree", "source_accuracy", "unlearned_accuracy", "max_degree", "samples"}
FAST = SpdConfig(epochs=3, batch_size=32, width=8, device="cpu", preview=4)


@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 8, 8), (2, 7, 9)])
def test_generator_keeps_shape_and_bound(shape: tuple[int, int, int]) -> None:
    torch.manual_seed(0)
    generator = PerturbationGenerator(shape[0], epsilon=0.05, width=8)
    out = generator(torch.rand(5, *shape) * 10)
    assert out.shape == (5, *shape)
    assert float(out.detach().abs().max()) <= 0.05 + 1e-7
    out.sum().backward()  # differentiable end to end
    assert all(p.grad is not None for p in generator.parameters())


def test_generator_rejects_tiny_images() -> None:
    with pytest.raises(ValueError, match="4x4"):
        PerturbationGenerator(1, epsilon=0.1)(torch.rand(2, 1, 3, 8))


def test_loss_is_eq_11() -> None:
    logits_m, logits_ul = torch.randn(6, 4), torch.randn(6, 4)
    y = torch.tensor([0, 1, 2, 3, 0, 1])
    loss, loss_m, loss_ul = spd_loss(logits_m, logits_ul, y, eta=0.03)
    ce = torch.nn.functional.cross_entropy
    assert torch.isclose(loss_m, ce(logits_m, y))
    assert torch.isclose(loss_ul, ce(logits_ul, y))
    assert torch.isclose(loss, loss_m - 0.03 * loss_ul)


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(pydantic.ValidationError):
        SpdConfig(etaa=0.1)
    with pytest.raises(pydantic.ValidationError):
        SpdConfig(epsilon=0.0)
    assert SpdConfig().eta == 0.03


@pytest.fixture(scope="module")
def digits() -> tuple[ArrayDataset, ArrayDataset]:
    """(digits train set, its class-3 samples = D_f)."""
    train = load_dataset("digits").train
    return train, train.subset(np.flatnonzero(train.y == FORGET_CLASS))


def _trained(data: ArrayDataset, seed: int) -> ClassifierModel:
    torch.manual_seed(seed)
    model = build_model("lenet5", 10, 1, 8)
    train_local(model, data, epochs=15, lr=0.05, batch_size=32, seed=seed, momentum=0.9)
    return model.eval()


@pytest.fixture(scope="module")
def models(digits: tuple[ArrayDataset, ArrayDataset]) -> tuple[ClassifierModel, ClassifierModel]:
    """(source trained on every class, a model that never saw class 3)."""
    train, _ = digits
    source = _trained(train, seed=0)
    never = _trained(train.subset(np.flatnonzero(train.y != FORGET_CLASS)), seed=1)
    return source, never


def test_degree_is_zero_for_the_same_model(digits, models) -> None:
    _, forget = digits
    source, _ = models
    assert accuracy(source, forget) > 0.9
    before = {k: v.clone() for k, v in source.state_dict().items()}
    for other in (source, build_model("lenet5", 10, 1, 8)):
        other.load_state_dict(before)
        result = spd_degree(source, other, forget, 10, FAST)
        assert result.degree == pytest.approx(0.0, abs=1e-9)
        assert result.source_accuracy > 0.8  # the slight perturbation keeps M right (Eq. 9)
    after = source.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # caller's model untouched
    assert not source.training


def test_degree_is_large_for_a_model_without_the_class(digits, models) -> None:
    _, forget = digits
    source, never = models
    events: list[tuple[str, int, int]] = []
    result = spd_degree(
        source, never, forget, 10, FAST, progress=lambda p, s, t, m: events.append((p, s, t))
    )
    assert result.degree > 0.7
    assert result.unlearned_accuracy < 0.1
    assert result.max_degree == pytest.approx(0.9)
    assert result.samples == len(forget)
    assert events == [("spd", e, FAST.epochs) for e in range(1, FAST.epochs + 1)]
    bound = FAST.epsilon + 1e-6
    assert np.abs(result.perturbed - result.originals).max() <= bound
    assert result.perturbed.min() >= 0.0 and result.perturbed.max() <= 1.0


def test_seeded_and_subsampled(digits, models) -> None:
    _, forget = digits
    source, never = models
    config = FAST.model_copy(update={"max_samples": 50, "epochs": 1})
    first = spd_degree(source, never, forget, 10, config)
    second = spd_degree(source, never, forget, 10, config)
    assert first.samples == 50
    assert first.degree == second.degree
    np.testing.assert_array_equal(first.perturbed, second.perturbed)


def test_write_spd(tmp_path, digits, models) -> None:
    _, forget = digits
    source, never = models
    result = spd_degree(source, never, forget, 10, FAST.model_copy(update={"epochs": 1}))
    paths = write_spd(result, tmp_path / "out")
    payload = json.loads((tmp_path / "out" / SPD_JSON_FILE).read_text())
    assert JSON_KEYS | {"seconds", "config"} <= payload.keys()
    assert payload["degree"] == pytest.approx(result.degree)
    assert payload["config"]["eta"] == FAST.eta
    assert paths["png"] == tmp_path / "out" / SPD_IMAGE_FILE
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
