"""Sequential deletions end to end on digits: two steps recorded, the reference without both."""

from __future__ import annotations

import json

import pytest

from fedforget.data import build_federation
from fedforget.report.recorder import ROUNDS_FILE
from fedforget.simulations.runner import simulate

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def two_deletions(tmp_path_factory, make_config):
    config = make_config(
        out=tmp_path_factory.mktemp("sequential"),
        strategy="retrain",
        train={"rounds": 4},
        deletion={"mode": "random", "share": 0.1, "round": [2, 3], "deleting_clients": [[0], [1]]},
    )
    return config, simulate(config)


def test_each_step_is_recorded_with_its_own_clients_and_samples(two_deletions):
    config, summary = two_deletions
    plan = build_federation(config).plan
    steps = [(s.round, s.clients, s.forget_samples) for s in summary.deletions]
    sizes = [len(plan.forget_by_client[c]) for c in (0, 1)]
    assert steps == [(2, [0], sizes[0]), (3, [1], sizes[1])]
    assert summary.deletion.round == 3  # ``deletion``: the latest step
    assert all(s.bytes_to_clients > 0 and s.bytes_from_clients > 0 for s in summary.deletions)
    stored = json.loads((config.out / "summary.json").read_text())
    assert [s["round"] for s in stored["deletions"]] == [2, 3]


def test_the_reference_and_each_retrain_exclude_everything_deleted_so_far(two_deletions):
    config, summary = two_deletions
    rows = [json.loads(line) for line in (config.out / ROUNDS_FILE).read_text().splitlines()]
    rounds = [r for r in rows if "round" in r]
    # the federation trained on both clients' D_f until each one's step
    federated = [r for r in rounds if r["phase"] == "federated"]
    assert all(r["deleted_sample_passes"] > 0 for r in federated[:2])
    # each retrain step reran its rounds from w0 without the data deleted so far: the first
    # still on client 1's D_f (not asked for yet), the second and the reference on neither
    retrain = [r for r in rounds if r["phase"] == "retrain"]
    assert len(retrain) == 2 + 3
    assert all(r["deleted_sample_passes"] > 0 for r in retrain[:2])
    reference = [r for r in rounds if r["phase"] == "reference"]
    assert len(reference) == config.train.rounds
    assert all(r["deleted_sample_passes"] == 0 for r in retrain[2:] + reference)
    assert summary.bookkeeping.deleted_passes_after_deletion == 0
    assert summary.reference is not None
