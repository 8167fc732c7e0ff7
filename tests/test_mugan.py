"""Paper 002: the impair-repair step, MuGAN, zMuGAN's model inversion, and AIN.

One small setting on sklearn's digits (8x8): a LeNet-5 trained centrally and a conditional GAN
trained on the same images, both for a few seconds.

Two choices keep the results the same on every CPU (bars measured over setup seeds 0-4, each
with torch's AVX-512 and AVX2 kernels, ``ATEN_CPU_CAPABILITY``, as stand-ins for two CPUs):

- The LeNet-5 trains with plain SGD. With momentum 0.9 (an effective step of 0.5) training
  was chaotic: the last bits of one CPU's kernels gave another model (seed 0: 97 % or 86 %
  on the test set depending on the kernels; seed 1: 50 %).
- The forgotten class is 4, not a class the model answers to noise. Impair-repair pulls
  D_f's outputs towards the model's answer to uniform noise ``M_ref(z)``; on digits that
  answer is mostly 8, 9, 3 (or 0): for the class it names, it cannot push the outputs away
  (class 3, 15 % of the noise mass: 46-62 % of the 3s left, against 0 % of the 4s).
  ``test_setting_learned`` checks this premise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from fedforget.data.sources import ArrayDataset, load_dataset
from fedforget.gan import build_conditional_gan, train_gan
from fedforget.metrics import anamnesis_index, relearn_steps
from fedforget.models import build_model
from fedforget.training import accuracy, load_numpy_state, state_to_numpy, train_local
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner
from fedforget.unlearning.impair_repair import ImpairRepairSettings, impair_loss, impair_repair
from fedforget.unlearning.zmugan import ZMuGanSettings, invert

FORGOTTEN = 4
NOISE_MASS_MAX = 0.1  # share of the model's answer to noise that may name FORGOTTEN


def _build() -> torch.nn.Module:
    return build_model("lenet5", 10, 1, 8)


@pytest.fixture(scope="module")
def setting():
    """Digits, a trained LeNet-5's weights and a trained conditional GAN."""
    torch.set_num_threads(1)
    data = load_dataset("digits")
    torch.manual_seed(0)
    model = _build()
    train_local(model, data.train, epochs=20, lr=0.1, batch_size=16, seed=0)
    gan = build_conditional_gan(10, data.train.x.shape[1:], seed=0)
    train_gan(gan, data.train, epochs=30, seed=0)
    return data, state_to_numpy(model), gan


def _trained(state) -> torch.nn.Module:
    return load_numpy_state(_build(), state)


def _split(data: ArrayDataset, label: int) -> tuple[ArrayDataset, ArrayDataset]:
    forgotten = data.y == label
    return data.subset(np.flatnonzero(forgotten)), data.subset(np.flatnonzero(~forgotten))


def _context() -> UnlearningContext:
    return UnlearningContext(initial_state={}, build_model=_build)


def _class_request(data: ArrayDataset, gan=None, mode: str = "class") -> UnlearningRequest:
    forget, _ = _split(data, FORGOTTEN)
    return UnlearningRequest(
        forget=forget, num_classes=10, mode=mode, forget_classes=(FORGOTTEN,), generator=gan
    )


def test_setting_learned(setting):
    data, state, _ = setting
    model = _trained(state).eval()
    test_forget, _ = _split(data.test, FORGOTTEN)
    assert accuracy(model, data.test) > 0.9
    assert accuracy(model, test_forget) > 0.9  # so a method that does nothing fails below
    noise = torch.rand((1000, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mass = F.softmax(model(noise), dim=1)[:, FORGOTTEN].mean()
    assert float(mass) < NOISE_MASS_MAX  # else impair-repair cannot forget it (see above)


def test_impair_pulls_forget_outputs_to_the_reference_on_noise(setting):
    data, state, _ = setting
    forget, retain = _split(data.train, FORGOTTEN)
    model, reference = _trained(state), _trained(state).eval()
    x_forget = torch.from_numpy(forget.x)
    z = torch.rand(x_forget.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = float(impair_loss(model, reference, x_forget, z))
    settings = ImpairRepairSettings(lr=1e-3, impair_epochs=5, repair_epochs=1)
    x_retain, y_retain = torch.from_numpy(retain.x), torch.from_numpy(retain.y)
    unlearned = impair_repair(model, x_forget, x_retain[:16], y_retain[:16], settings, _context())
    with torch.no_grad():
        after = float(impair_loss(unlearned, reference, x_forget, z))
    assert after < 0.5 * before


def test_impair_repair_forgets_the_class_and_keeps_the_rest(setting):
    data, state, _ = setting
    forget, retain = _split(data.train, FORGOTTEN)
    test_forget, test_retain = _split(data.test, FORGOTTEN)
    settings = ImpairRepairSettings(lr=1e-3, impair_epochs=5, repair_epochs=2)
    model = impair_repair(
        _trained(state),
        torch.from_numpy(forget.x),
        torch.from_numpy(retain.x),
        torch.from_numpy(retain.y),
        settings,
        _context(),
    )
    # seeds 0-4 x 2 kernel sets where the premise holds: 0-6 % of the 4s left, >= 95.7 % kept
    assert accuracy(model, test_forget) < 0.2
    assert accuracy(model, test_retain) > 0.9


def test_impair_repair_refuses_an_empty_forget_set(setting):
    data, state, _ = setting
    empty = torch.zeros((0, 1, 8, 8))
    x, y = torch.from_numpy(data.train.x), torch.from_numpy(data.train.y)
    with pytest.raises(ValueError, match="non-empty D_f"):
        impair_repair(_trained(state), empty, x, y, ImpairRepairSettings(), _context())


@pytest.fixture(scope="module")
def mugan_forgotten(setting) -> torch.nn.Module:
    """The setting's model after MuGAN forgot the class (500 GAN draws per class)."""
    data, state, gan = setting
    unlearner = build_unlearner("mugan", samples_per_class=500, lr=1e-3)
    return unlearner.unlearn(_trained(state), _class_request(data.train, gan), _context())


def test_mugan_forgets_the_class_with_the_gan(setting, mugan_forgotten):
    data, state, _ = setting
    test_forget, test_retain = _split(data.test, FORGOTTEN)
    model = mugan_forgotten
    before = accuracy(_trained(state), test_forget)
    # measured: 0-44 % of the 4s left (digits' 8x8 GAN draws are rough), >= 90.4 % kept; the
    # bar sits midway between the worst seed and a method that does nothing (>= 90 %)
    assert accuracy(model, test_forget) < before - 0.3
    assert accuracy(model, test_retain) > 0.85


def test_mugan_refuses_other_modes_and_a_missing_gan(setting):
    data, state, gan = setting
    unlearner = build_unlearner("mugan")
    with pytest.raises(ValueError, match=r"mugan unlearns classes only.*'backdoor'"):
        unlearner.unlearn(_trained(state), _class_request(data.train, gan, "backdoor"), _context())
    with pytest.raises(ValueError, match="'generator' need"):
        unlearner.unlearn(_trained(state), _class_request(data.train), _context())


def test_zmugan_inversion_draws_what_the_model_calls_the_requested_class(setting):
    _, state, _ = setting
    classifier = _trained(state).eval()
    settings = ZMuGanSettings()  # the defaults
    generator = invert(classifier, 10, (1, 8, 8), settings, seed=0, device=torch.device("cpu"))
    labels = torch.arange(10).repeat(50)
    z = torch.randn(len(labels), settings.z_dim, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        images = generator(z, labels)
        predicted = classifier(images).argmax(dim=1)
    assert float((predicted == labels).float().mean()) > 0.8  # measured 98-100 %, chance 10 %
    assert float(images.std(dim=0).mean()) > 0.01  # not one image per class


def test_zmugan_needs_no_data_and_forgets(setting):
    data, state, _ = setting
    test_forget, test_retain = _split(data.test, FORGOTTEN)
    request = UnlearningRequest(
        forget=ArrayDataset(np.empty((0, 1, 1, 1), np.float32), np.empty(0, np.int64)),
        num_classes=10,
        mode="class",
        forget_classes=(FORGOTTEN,),
    )  # what the strategy sends to a method without needs; the shape is probed on the model
    unlearner = build_unlearner("zmugan", generators=2)
    model = unlearner.unlearn(_trained(state), request, _context())
    # measured: 0-19 % of the 4s left, >= 91.7 % kept
    assert accuracy(model, test_forget) < 0.5 * accuracy(_trained(state), test_forget)
    assert accuracy(model, test_retain) > 0.85


def test_relearn_steps_count_until_the_target(setting, mugan_forgotten):
    data, state, _ = setting
    forget, _ = _split(data.test, FORGOTTEN)
    original = _trained(state)
    assert relearn_steps(original, forget.x, forget.y, 0.9) == 0  # already there
    forgotten = mugan_forgotten
    steps = relearn_steps(forgotten, forget.x, forget.y, 0.9, lr=0.01, max_steps=100)
    assert 0 < steps <= 100
    assert relearn_steps(forgotten, forget.x, forget.y, 1.01, max_steps=7) == 7  # capped
    before = state_to_numpy(forgotten)
    relearn_steps(forgotten, forget.x, forget.y, 0.9)
    assert all(np.array_equal(v, state_to_numpy(forgotten)[k]) for k, v in before.items())


def test_anamnesis_index_is_the_ratio_to_retrain():
    assert anamnesis_index(10, 20) == pytest.approx(0.5)
    assert anamnesis_index(20, 20) == pytest.approx(1.0)
    assert anamnesis_index(5, 0) is None


def test_compare_table_has_ain_against_the_retrain_row():
    from fedforget.report.comparison import CSV_COLUMNS, markdown_table
    from fedforget.simulations.compare import _fill_anamnesis

    rows = [
        {"strategy": "original", "relearn_steps": 0},
        {"strategy": "retrain", "relearn_steps": 20},
        {"strategy": "mugan", "relearn_steps": 5},
        {"strategy": "federaser", "relearn_steps": None},
    ]
    _fill_anamnesis(rows)
    assert [row["ain"] for row in rows] == [0.0, 1.0, 0.25, None]
    table = markdown_table(rows)
    assert "| AIN |" in table and "| mugan | 0.250 |" in table
    assert "AIN (paper 002 Eq. 10)" in table  # the footnote names the relearn target
    assert {"relearn_steps", "ain"} <= set(CSV_COLUMNS)
