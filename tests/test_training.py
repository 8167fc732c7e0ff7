"""The shared training loop (train_epoch) that the unlearners and SPD-GAN run their steps in."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fedforget.data import ArrayDataset, load_xy_npz, triggered_samples
from fedforget.data.deletion import apply_trigger
from fedforget.training import seeded_batches, train_epoch

torch.set_num_threads(1)


def _problem(n: int = 40) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    return nn.Linear(3, 2), torch.randn(n, 3), torch.randint(0, 2, (n,))


def _hand_loop(model: nn.Linear, x: torch.Tensor, y: torch.Tensor, seed: int) -> list[float]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for batch in seeded_batches(len(x), 8, torch.Generator().manual_seed(seed)):
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x[batch]), y[batch])
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def test_train_epoch_equals_the_hand_written_loop() -> None:
    model, x, y = _problem()
    reference = nn.Linear(3, 2)
    reference.load_state_dict(model.state_dict())
    losses = _hand_loop(reference, x, y, seed=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = seeded_batches(len(x), 8, torch.Generator().manual_seed(3))
    done = train_epoch(optimizer, batches, lambda b: F.cross_entropy(model(x[b]), y[b]))
    assert done.steps == len(losses) == 5 and not done.stopped
    assert done.losses == {"loss": sum(losses) / len(losses)}
    for ours, theirs in zip(model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(ours, theirs)


def test_named_terms_are_averaged_and_the_objective_is_what_descends() -> None:
    model, x, y = _problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    def ascent(batch: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        ce = F.cross_entropy(model(x[batch]), y[batch])
        return -ce, {"ce": ce, "twice": 2 * ce}

    with torch.no_grad():
        before = float(F.cross_entropy(model(x), y))
    done = train_epoch(optimizer, seeded_batches(len(x), 8, torch.Generator()), ascent)
    assert set(done.losses) == {"ce", "twice"}
    assert done.losses["twice"] == pytest.approx(2 * done.losses["ce"])
    with torch.no_grad():
        assert float(F.cross_entropy(model(x), y)) > before + 0.05  # it ascended the CE


def test_stop_ends_the_pass_after_the_step_that_says_so() -> None:
    model, x, y = _problem()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    calls = []
    done = train_epoch(
        optimizer,
        seeded_batches(len(x), 8, torch.Generator()),
        lambda b: F.cross_entropy(model(x[b]), y[b]),
        stop=lambda: calls.append(1) or len(calls) == 2,
    )
    assert done.stopped and done.steps == 2 and len(calls) == 2


def test_max_grad_norm_bounds_each_step() -> None:
    model, x, y = _problem()
    start = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    train_epoch(
        optimizer,
        [torch.arange(len(x))],
        lambda b: 1000 * F.cross_entropy(model(x[b]), y[b]),
        max_grad_norm=0.01,
    )
    pairs = zip(model.parameters(), start, strict=True)
    moved = torch.cat([(p.detach() - s).flatten() for p, s in pairs])
    assert float(moved.norm()) <= 0.01 + 1e-6


def test_triggered_samples_are_seeded_outside_the_target_and_relabelled() -> None:
    rng = np.random.default_rng(0)
    data = ArrayDataset(rng.random((50, 1, 8, 8), dtype=np.float32), np.arange(50) % 5)
    chosen = triggered_samples(data, target=0, trigger_size=2, count=12, seed=1)
    again = triggered_samples(data, target=0, trigger_size=2, count=12, seed=1)
    assert len(chosen) == 12 and np.array_equal(chosen.x, again.x)
    assert (chosen.y == 0).all() and chosen.y.dtype == np.int64
    assert np.array_equal(chosen.x, apply_trigger(chosen.x, 2))  # every image carries it
    assert len(triggered_samples(data, 0, 2, count=1000, seed=1)) == 40  # all the other classes


def test_load_xy_npz_validates_like_the_npz_source(tmp_path) -> None:
    path = tmp_path / "mine.npz"
    np.savez(path, x=np.full((3, 4, 4), 255, dtype=np.uint8), y=np.array([0, 1, 2]))
    data = load_xy_npz(path)
    assert data.x.shape == (3, 1, 4, 4) and data.x.max() == 1.0 and data.y.dtype == np.int64
    np.savez(path, x=np.zeros((3, 4, 4)), z=np.zeros(3))
    with pytest.raises(ValueError, match="missing array"):
        load_xy_npz(path)
