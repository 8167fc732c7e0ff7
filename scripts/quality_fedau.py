"""FedAU on digits, in-process: forgotten / kept before, after FedAU and after a retrain.

The setups of ``tests/test_fedau.py`` (6 FedAvg rounds, LeNet-5): ``class`` (every client
deletes its 3s), ``threes`` (client 0, holding every 3, leaves), ``backdoor`` (client 0, the
attacker, leaves) and ``samples`` (10 % triggered samples over 4 clients, a mode FedAU
refuses: the script applies the code's sample-level operation anyway, to measure it).
Prints one JSON line per setup and seed. Example::

    OMP_NUM_THREADS=1 python scripts/quality_fedau.py --kinds class,threes --seeds 0,1 \
        --option joint=false
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))

from conftest import digits_config, leaving_client_federation

from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.training import load_numpy_state, state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest
from fedforget.unlearning.fedau import FedAUUnlearner, auxiliary_trainings

ROUNDS = 6


def _setup(kind: str, seed: int):
    train = {"batch_size": 16}
    if kind == "class":
        deletion = {"mode": "class", "forget_classes": [3], "share": 0.1}
        config = digits_config(seed=seed, deletion=deletion, train=train)
        return config, build_federation(config), "class"
    if kind == "samples":
        config = digits_config(seed=seed, deletion={"mode": "backdoor", "share": 0.1}, train=train)
        return config, build_federation(config), "backdoor"
    config, federation = leaving_client_federation(kind, seed)
    return config, federation, "client"


def _scores(evaluator: Evaluator, model, kind: str) -> tuple[float, float]:
    metrics = evaluator.evaluate(model)
    if kind in ("class", "threes"):
        return metrics.forget_test_accuracy, metrics.retain_test_accuracy
    return metrics.backdoor_success, metrics.test_accuracy


def measure(kind: str, seed: int, options: dict) -> dict:
    """Train with FedAU's heads, unlearn, retrain; (forgotten, kept) of each model."""
    config, fed, mode = _setup(kind, seed)

    def build():
        return build_model("lenet5", fed.num_classes, 1, fed.image_size)

    torch.manual_seed(seed)
    initial = state_to_numpy(build())
    fedau = FedAUUnlearner(**options)
    classes = tuple(fed.plan.forget_classes) if mode == "class" else ()
    clients = {}
    for cid in range(fed.num_clients):
        data, ids = fed.client_data(cid, False)
        clients[cid] = (data, fed.is_deleted(ids))
    train = config.train
    trainings = auxiliary_trainings(
        clients, fedau, mode, fed.num_classes, classes, lr=train.lr,
        batch_size=train.batch_size, seed=seed,
    )  # fmt: skip
    full = LocalFederation.from_federation(
        fed, build, train, drop_deleted=False, seed=seed, step_hooks=trainings
    )
    trained = full.run(initial, ROUNDS)
    retrained = LocalFederation.from_federation(
        fed, build, train, drop_deleted=True, seed=seed
    ).run(initial, ROUNDS)
    request = UnlearningRequest(
        forget=fed.forget_set(),
        num_classes=fed.num_classes,
        mode="client" if mode == "backdoor" else mode,  # the refused mode, measured anyway
        forget_classes=classes,
        auxiliary_heads=tuple(t.state() for t in trainings.values()),
    )
    context = UnlearningContext(initial_state=initial, build_model=build, seed=seed)
    unlearned = fedau.unlearn(load_numpy_state(build(), trained), request, context)
    evaluator = Evaluator(fed)
    return {
        "kind": kind,
        "seed": seed,
        "options": options,
        "before": _scores(evaluator, load_numpy_state(build(), trained), kind),
        "after": _scores(evaluator, unlearned, kind),
        "retrain": _scores(evaluator, load_numpy_state(build(), retrained), kind),
        "auxiliary_seconds": sum(t.total_seconds for t in trainings.values()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", default="class,threes,backdoor")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE (JSON value)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    options = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.option)}
    for kind in args.kinds.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            print(json.dumps(measure(kind, seed, options)), flush=True)


if __name__ == "__main__":
    main()
