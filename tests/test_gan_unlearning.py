"""GAN inversion, cascaded GAN unlearning (paper 001) and the GAN metrics, on 8x8 digits.

The forgotten class is 4. Class-mode cascaded unlearning maps the class's drawings to the
GAN's average image (all classes mixed), which is no digit to the eye but one to the judge:
3 (39 %) for this GAN trained with AVX2 kernels, 2 (34 %) with AVX-512 ones. A class the
judge reads into that blur is not forgotten by the judge's measure (class 3: 70 % still
recognised under AVX2, 0 % under AVX-512); ``test_cascaded_class_unlearning_lowers_recognition``
checks that premise for class 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.config import ConfigError
from fedforget.data.sources import ArrayDataset, load_dataset
from fedforget.gan import (
    CascadedUnlearner,
    GanUnlearningRequest,
    InversionSettings,
    UnknownGanUnlearnerError,
    build_conditional_gan,
    build_gan_unlearner,
    classifier_frechet_distance,
    discriminator_auc,
    evaluate_gan,
    frechet_distance,
    invert,
    judge_recognition,
    reference_classifier,
    sample_images,
    substitute_images,
    train_gan,
)
from fedforget.gan.cascaded import class_average_image, nearest_other_class
from fedforget.training import predict_proba

FORGOTTEN = 4


@pytest.fixture(scope="module")
def digits():
    torch.set_num_threads(1)
    return load_dataset("digits")


@pytest.fixture(scope="module")
def judge(digits):
    return reference_classifier(digits.train, 10, seed=0, epochs=8)


@pytest.fixture(scope="module")
def gan(digits):
    model = build_conditional_gan(10, (1, 8, 8), seed=0, width=16)
    train_gan(model, digits.train, epochs=40, lr=1e-3, seed=0)
    return model.eval()


def _split(digits, seed: int = 0):
    """16 unlearning images, 200 learning images, 300 held-out remaining images."""
    order = np.random.default_rng(seed).permutation(len(digits.train))
    return (
        digits.train.subset(order[:16]),
        digits.train.subset(order[16:216]),
        digits.train.subset(order[216:516]),
    )


# -- inversion -------------------------------------------------------------------------


def test_inversion_reconstructs_better_than_random_codes(gan):
    rng = torch.Generator().manual_seed(1)
    labels = torch.arange(20) % 10
    with torch.no_grad():
        targets = gan.generator(torch.randn(20, gan.z_dim, generator=rng), labels)
        random = gan.generator(torch.randn(20, gan.z_dim, generator=rng), labels)
    random_error = float((random - targets).pow(2).mean())
    result = invert(
        gan.generator, targets, labels, settings=InversionSettings(steps=60, restarts=2)
    )
    assert result.z.shape == (20, gan.z_dim)
    assert result.mean_error < 0.3 * random_error
    again = invert(gan.generator, targets, labels, settings=InversionSettings(steps=60, restarts=2))
    assert torch.equal(result.z, again.z)  # seeded


# -- substitutes -----------------------------------------------------------------------


def test_item_substitutes_build_the_right_targets(gan):
    g = gan.generator
    z = torch.randn(6, gan.z_dim, generator=torch.Generator().manual_seed(2))
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    with torch.no_grad():
        average = g(torch.zeros_like(z), y)
        truncated = g(0.5 * z, y)
    kw = {"mode": "item"}
    assert torch.allclose(substitute_images(g, z, y, substitute="average", **kw), average)
    got = substitute_images(g, z, y, substitute="truncation", psi=0.5, **kw)
    assert torch.allclose(got, truncated)
    faded = substitute_images(g, z, y, substitute="projection", psi=0.0, **kw)
    assert torch.allclose(faded, average)
    assert not torch.allclose(truncated, average)


def test_class_substitutes_build_the_right_targets(gan):
    g = gan.generator
    z = torch.randn(8, gan.z_dim, generator=torch.Generator().manual_seed(3))
    y = torch.full((8,), FORGOTTEN)
    retained = [c for c in range(10) if c != FORGOTTEN]
    average = class_average_image(g, 0, torch.device("cpu"))
    got = substitute_images(g, z, y, substitute="average", mode="class", average=average)
    assert torch.allclose(got, average.expand_as(got))
    assert torch.allclose(got[0], average[0])
    others = nearest_other_class(g, z, y, retained)
    assert FORGOTTEN not in others.tolist()
    targets = substitute_images(g, z, y, substitute="other-class", mode="class", retained=retained)
    with torch.no_grad():
        prototypes = g(torch.zeros(10, gan.z_dim), torch.arange(10))
        drawn = g(z, y)
    for k in range(8):
        assert torch.allclose(targets[k], prototypes[others[k]])
        distances = (prototypes[retained] - drawn[k]).pow(2).flatten(1).sum(1)
        assert retained[int(distances.argmin())] == int(others[k])


@pytest.mark.parametrize(
    ("substitute", "mode"),
    [("truncation", "class"), ("projection", "class"), ("other-class", "item")],
)
def test_substitute_that_does_not_fit_the_mode_raises(digits, substitute, mode):
    forget = digits.train.subset(np.flatnonzero(digits.train.y == FORGOTTEN)[:4])
    learning = digits.train.subset(np.flatnonzero(digits.train.y != FORGOTTEN)[:8])
    request = GanUnlearningRequest(
        forget, mode=mode, forgotten_classes=(FORGOTTEN,), learning=learning
    )
    with pytest.raises(ValueError, match="does not apply to"):
        CascadedUnlearner(substitute=substitute).check(request)


def test_bad_requests_and_options_raise(digits):
    some = digits.train.subset(np.arange(8))
    with pytest.raises(ConfigError, match="cascaded option substitute"):
        build_gan_unlearner("cascaded", substitute="median")
    with pytest.raises(ConfigError, match="cascaded option nope"):
        build_gan_unlearner("cascaded", nope=1)
    with pytest.raises(UnknownGanUnlearnerError, match="choose one of: cascaded"):
        build_gan_unlearner("nope")
    with pytest.raises(ValueError, match="needs learning images"):
        CascadedUnlearner(shot="few").check(GanUnlearningRequest(some))
    with pytest.raises(ValueError, match="not forgotten"):
        GanUnlearningRequest(some, mode="class", forgotten_classes=(FORGOTTEN,))
    with pytest.raises(ValueError, match="forgotten classes"):
        GanUnlearningRequest(some, mode="class")
    threes = digits.train.subset(np.flatnonzero(digits.train.y == FORGOTTEN)[:4])
    with pytest.raises(ValueError, match="must not belong"):
        GanUnlearningRequest(threes, mode="class", forgotten_classes=(FORGOTTEN,), learning=threes)
    with pytest.raises(ValueError, match="feature_extractor"):
        CascadedUnlearner(shot="zero", perceptual_weight=1.0).check(GanUnlearningRequest(some))


# -- cascaded unlearning ---------------------------------------------------------------


def test_cascaded_item_unlearning_raises_the_auc(gan, digits):
    forget, learning, held = _split(digits)
    before = discriminator_auc(gan, held, forget)
    unlearner = build_gan_unlearner(
        "cascaded", substitute="average", max_iterations=150, auc_target=0.95
    )
    result = unlearner.unlearn(gan, GanUnlearningRequest(forget, learning=learning))
    after = discriminator_auc(result.gan, held, forget)
    assert after >= max(before + 0.2, 0.75)
    assert result.auc_trajectory[0][0] == 0 and result.iterations > 0
    assert result.gan is not gan  # the input GAN is untouched
    assert discriminator_auc(gan, held, forget) == pytest.approx(before)


def test_cascaded_class_unlearning_lowers_recognition(gan, digits, judge):
    forget = digits.train.subset(np.flatnonzero(digits.train.y == FORGOTTEN))
    learning = digits.train.subset(np.flatnonzero(digits.train.y != FORGOTTEN)[:300])
    request = GanUnlearningRequest(
        forget, mode="class", forgotten_classes=(FORGOTTEN,), learning=learning
    )
    substitute = class_average_image(gan.generator, 0, torch.device("cpu")).numpy()
    assert predict_proba(judge, substitute)[0, FORGOTTEN] < 0.1  # the premise (see above)
    before = judge_recognition(gan, judge, 50)
    result = build_gan_unlearner("cascaded", max_iterations=150).unlearn(gan, request)
    after = judge_recognition(result.gan, judge, 50)
    # GAN seeds 0-2 x two kernel sets: 66-92 % recognised before, 0 % after, the rest 85-98 %
    assert before[FORGOTTEN] >= 0.5
    assert after[FORGOTTEN] <= 0.3
    remaining = [after[c] for c in range(10) if c != FORGOTTEN]
    assert np.mean(remaining) >= 0.6


# -- metrics ---------------------------------------------------------------------------


def test_frechet_distance_is_zero_for_a_set_with_itself_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(500, 6))
    b = rng.normal(size=(500, 6))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(a, b) < 0.5
    assert frechet_distance(a, b + 2.0) > frechet_distance(a, b) + 10.0


def test_classifier_frechet_distance_separates_classes(digits, judge):
    x, y = digits.test.x, digits.test.y
    ones, sevens = x[y == 1], x[y == 7]
    assert classifier_frechet_distance(judge, ones, ones) == pytest.approx(0.0, abs=1e-6)
    assert classifier_frechet_distance(judge, ones, sevens) > 1.0


class _Brightness(torch.nn.Module):
    """A stand-in discriminator whose logit grows with the mean pixel."""

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 10.0 * (x.mean(dim=(1, 2, 3)) - 0.5)


def test_discriminator_auc_is_one_for_separable_scores():
    model = build_conditional_gan(2, (1, 4, 4))
    model.discriminator = _Brightness()
    bright = ArrayDataset(np.full((5, 1, 4, 4), 0.9, np.float32), np.zeros(5, np.int64))
    dark = ArrayDataset(np.full((7, 1, 4, 4), 0.1, np.float32), np.ones(7, np.int64))
    assert discriminator_auc(model, bright, dark) == 1.0
    assert discriminator_auc(model, dark, bright) == 0.0


def test_evaluate_gan_and_cached_reference_classifier(gan, digits, judge, tmp_path):
    forget, learning, _ = _split(digits)
    report = evaluate_gan(
        gan,
        judge,
        digits.test,
        forgotten_classes=(FORGOTTEN,),
        learning=learning,
        unlearning=forget,
        samples_per_class=30,
    )
    assert report.forgotten_recognition == report.recognition[FORGOTTEN]
    assert 0.0 <= report.downstream_accuracy <= 1.0 and report.auc is not None
    assert report.fd_forgotten is not None and report.fd_remaining >= 0.0
    path = tmp_path / "judge.pt"
    trained = reference_classifier(digits.train, 10, seed=1, epochs=1, cache_path=path)
    loaded = reference_classifier(digits.train, 10, seed=5, epochs=1, cache_path=path)
    drawn = sample_images(gan, np.arange(10))
    assert np.allclose(predict_proba(trained, drawn), predict_proba(loaded, drawn))
