"""QuickDrop's core: gradient-matching distillation of a client's data during its training,
and unlearning a class on the synthetic set (the wiring: test_client_removal, test_simulation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.data import build_federation
from fedforget.data.sources import ArrayDataset
from fedforget.models import build_model
from fedforget.training import accuracy, seeded_batches, to_tensors
from fedforget.unlearning.quickdrop import (
    GradientMatchingDistiller,
    initial_synthetic_set,
    matching_distance,
    unlearn_on_synthetic,
)

torch.set_num_threads(1)
FORGOTTEN = 3
DISTIL_EVERY = 4  # batches between two distillation steps (each costs ~10 double backwards)


def test_matching_distance_is_zero_for_parallel_gradients_only():
    torch.manual_seed(0)
    grads = [torch.randn(4, 3, 2), torch.randn(4)]
    scaled = [2.5 * g for g in grads]  # same directions
    assert float(matching_distance(grads, scaled)) < 1e-5
    assert float(matching_distance(grads, [-g for g in grads])) > 9.9  # 5 rows x (1 - (-1))


def _split(data: ArrayDataset, cls: int) -> tuple[ArrayDataset, ArrayDataset]:
    return data.subset(np.flatnonzero(data.y == cls)), data.subset(np.flatnonzero(data.y != cls))


@pytest.fixture(scope="module")
def distilled(make_config):
    """A LeNet-5 trained on digits with a distillation step every few batches (QuickDrop)."""
    federation = build_federation(make_config(deletion={"mode": "class", "forget_classes": [3]}))
    torch.manual_seed(0)
    model = build_model("lenet5", 10, 1, federation.image_size)
    distiller = GradientMatchingDistiller(initial_synthetic_set(federation.train, 10, 10, 0))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x, y = to_tensors(federation.train, torch.device("cpu"))
    generator = torch.Generator().manual_seed(0)
    for _ in range(4):
        for step, batch in enumerate(seeded_batches(len(x), 16, generator)):
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            if step % DISTIL_EVERY == 0:
                distiller.distillation_step(model, x[batch], y[batch])
    return federation, model, distiller.synthetic_set(), (x, y)


def test_distillation_steps_reduce_the_gradient_distance_at_fixed_weights(distilled):
    federation, model, _, (x, y) = distilled
    distiller = GradientMatchingDistiller(initial_synthetic_set(federation.train, 10, 10, 0))
    before = model.state_dict()
    distances = [distiller.distillation_step(model, x, y) for _ in range(10)]
    assert distances[-1] < 0.95 * distances[0], distances
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_the_distilled_set_unlearns_a_class(distilled):
    federation, model, synthetic, _ = distilled
    assert len(synthetic) == 100 and synthetic.x.min() >= 0 and synthetic.x.max() <= 1
    forget_test, retain_test = _split(federation.test, FORGOTTEN)
    before_forgotten, before_kept = accuracy(model, forget_test), accuracy(model, retain_test)
    assert before_forgotten > 0.8
    synthetic_forget, synthetic_retain = _split(synthetic, FORGOTTEN)
    unlearn_on_synthetic(model, synthetic_forget, synthetic_retain)
    after_forgotten, after_kept = accuracy(model, forget_test), accuracy(model, retain_test)
    message = (
        f"3s {before_forgotten:.3f} -> {after_forgotten:.3f}, "
        f"rest {before_kept:.3f} -> {after_kept:.3f}"
    )
    assert after_forgotten < 0.5 * before_forgotten, message
    assert after_kept > before_kept - 0.15, message
