"""FedAU: the auxiliary heads' targets and training, the linear operation, and its behaviour
on digits against a retrained model (the Flower wiring: test_simulation)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedforget.models import build_model
from fedforget.testing import fedau_outcome
from fedforget.unlearning import build_unlearner
from fedforget.unlearning.fedau import (
    AuxiliaryHead,
    AuxiliaryTraining,
    auxiliary_labels,
    combined_head,
)

torch.set_num_threads(1)
SEEDS = (0, 1)


def test_auxiliary_labels_differ_from_the_real_ones_exactly_where_the_deletion_lies():
    y = np.arange(20) % 10
    marked = np.zeros(20, dtype=bool)
    marked[[1, 5, 7]] = True
    for mode in ("backdoor", "random"):
        labels = auxiliary_labels(y, marked, mode, 10, seed=3)
        assert np.array_equal(labels[~marked], y[~marked])
        assert np.all(labels[marked] != y[marked])
    leaving = auxiliary_labels(y, marked, "client", 10, seed=3)
    assert np.all(leaving != y) and leaving.min() >= 0 and leaving.max() < 10
    assert np.array_equal(leaving, auxiliary_labels(y, marked, "client", 10, seed=3))
    assert set(auxiliary_labels(y, marked, "class", 10, (3, 8), seed=3)) == {3, 8}


def test_the_linear_operation_subtracts_in_class_mode_and_mixes_otherwise():
    head = {"weight": np.ones((2, 3)), "bias": np.ones(2)}
    heads = [{"weight": np.full((2, 3), 2.0), "bias": np.zeros(2)}] * 2
    forgotten = combined_head(head, heads, "class", alpha=0.9)
    assert np.allclose(forgotten["weight"], -1.0) and np.allclose(forgotten["bias"], 1.0)
    mixed = combined_head(head, heads, "client", alpha=0.9)
    assert np.allclose(mixed["weight"], 1.9) and np.allclose(mixed["bias"], 0.1)
    with pytest.raises(ValueError, match="auxiliary heads"):
        combined_head(head, [], "class", alpha=0.9)


def _lenet():
    torch.manual_seed(0)
    return build_model("lenet5", 10, 1, 8)


def test_the_head_alone_leaves_the_model_and_the_joint_step_moves_the_body():
    model = _lenet()
    x, y = torch.rand(8, 1, 8, 8), torch.randint(0, 10, (8,))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    alone = AuxiliaryHead.starting(model.head, None, "class", 0.5, lr=0.1)
    start = alone.state()["weight"]
    alone.step(model, x, y)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert not np.allclose(alone.state()["weight"], start)
    # (a zero W_a, class mode's start, sends the body no gradient yet: start from the head)
    joint = AuxiliaryHead.starting(model.head, None, "client", 0.5, lr=0.1, body_lr=0.1)
    joint.step(model, x, y)
    changed = [k for k, v in before.items() if not torch.equal(v, model.state_dict()[k])]
    assert changed and not any(k.startswith("head.") for k in changed)  # W_l is not W_a


def test_a_new_round_re_anchors_the_leaving_clients_head_on_the_received_one():
    fedau = build_unlearner("fedau", gamma=0.5)
    model = _lenet()
    kept = {"weight": np.zeros((10, 84), np.float32), "bias": np.zeros(10, np.float32)}
    fresh = fedau.new_head(model, kept, "client", lr=0.1)
    assert np.allclose(fresh.state()["weight"], 0.5 * model.head.weight.detach().numpy())
    assert np.allclose(fedau.new_head(model, kept, "class", lr=0.1).state()["weight"], 0.0)
    data = build_federation_like(64)
    training = AuxiliaryTraining(data, data.y, lambda m, k: fedau.new_head(m, k, "client", 0.1))
    for _ in range(2):  # two steps of one round, then a new round's model
        training(model, torch.from_numpy(data.x[:4]), torch.from_numpy(data.y[:4]))
    first = training.state()
    assert first is not None
    other = _lenet()
    training(other, torch.from_numpy(data.x[:4]), torch.from_numpy(data.y[:4]))
    assert training.previous is not None
    assert np.array_equal(training.previous["weight"], first["weight"])
    assert training.spent_seconds() > 0


def build_federation_like(n: int):
    from fedforget.data.sources import ArrayDataset

    rng = np.random.default_rng(0)
    return ArrayDataset(
        x=rng.random((n, 1, 8, 8), dtype=np.float32), y=rng.integers(0, 10, n).astype(np.int64)
    )


# -- behaviour on digits: FedAU against the model retrained without the deleted data ----------


@pytest.fixture(scope="module")
def outcome():
    """``outcome(kind, seed)``: (forgotten, kept) before, after FedAU and after a retrain."""
    cache: dict[tuple[str, int], dict] = {}

    def run(kind: str, seed: int) -> dict[str, tuple[float, float]]:
        if (kind, seed) not in cache:
            found = fedau_outcome(kind, seed)
            cache[kind, seed] = {k: found[k] for k in ("before", "after", "retrain")}
        return cache[kind, seed]

    return run


def _message(kind: str, seed: int, found: dict[str, tuple[float, float]]) -> str:
    shown = ", ".join(f"{k} {f:.3f}/{r:.3f}" for k, (f, r) in found.items())
    return f"{kind} seed {seed} (forgotten/kept): {shown}"


@pytest.mark.parametrize("seed", SEEDS)
def test_fedau_forgets_a_class_like_a_retrain_and_keeps_the_rest(outcome, seed):
    # measured: the test 3s 0.938/0.972 -> 0.000/0.000 (retrain 0.000/0.000), the rest
    # 0.932/0.920 -> 0.942/0.924 (retrain 0.945/0.927)
    found = outcome("class", seed)
    (before_f, before_k), (after_f, after_k) = found["before"], found["after"]
    retrain_f = found["retrain"][0]
    message = _message("class", seed, found)
    assert before_f > 0.8, message
    assert after_f < retrain_f + 0.1 and after_f < 0.2 * before_f, message
    assert after_k > before_k - 0.05, message


def test_fedau_removes_the_client_holding_a_class_at_a_retrains_cost(outcome):
    """On all but one of the seeds (0-3) whose FedAvg learned the 3s, and on two at least.

    Measured on an AVX2 EPYC: the test 3s 0.938/0.833 -> 0.031/0.000 (seeds 0/1; retrain
    0.000/0.000), the rest 0.935/0.965 -> 0.801/0.934 (retrain 0.832/0.906: the leaving client
    held a third of it). On an AVX-512 Xeon: seeds 1 and 3 0.833/0.871 -> 0.000/0.000, seed 2
    never learned the 3s (0.147), and seed 0 kept them (0.938 -> 0.906, the rest 0.866 ->
    0.658): whether W_a's auxiliary head took the 3s is left to the rounding of its training.
    """
    runs = {seed: outcome("threes", seed) for seed in range(4)}
    learned = {seed: found for seed, found in runs.items() if found["before"][0] > 0.6}
    removed = [
        seed
        for seed, found in learned.items()
        if found["after"][0] < 0.25 * found["before"][0]
        and found["after"][1] > found["retrain"][1] - 0.1
    ]
    message = "; ".join(_message("threes", seed, found) for seed, found in runs.items())
    assert len(learned) >= 2, message
    assert len(removed) >= max(2, len(learned) - 1), message


@pytest.mark.parametrize("seed", SEEDS)
def test_fedau_removes_a_backdoor_client_and_costs_clean_accuracy(outcome, seed):
    # measured: backdoor 0.527/0.932 -> 0.000/0.000 (retrain 0.010/0.034); clean test
    # 0.873/0.889 -> 0.688/0.784 (retrain 0.892/0.904): W is 0.9 W_a, and W_a saw random
    # labels on the leaving client's clean share too (see docs/methods.md)
    found = outcome("backdoor", seed)
    (before_f, _), (after_f, after_k) = found["before"], found["after"]
    message = _message("backdoor", seed, found)
    assert before_f > 0.4, message
    assert after_f < found["retrain"][0] + 0.1, message
    assert after_k > found["retrain"][1] - 0.3, message
