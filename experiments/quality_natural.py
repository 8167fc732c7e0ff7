"""Deletion-aware distillation on natural deletions (random samples, a leaving client).

Trains an in-process FedAvg federation (no Flower), unlearns with ``distill`` (the
deletion-aware target, and the incompetent-teacher target for comparison), runs the
bounded recovery relay, and retrains without D_f from the same w_0 for the same rounds.
Prints one JSON line per run. Example (the numbers of docs/methods-quality.md)::

    OMP_NUM_THREADS=1 python -m experiments.quality_natural --mode random --partition iid
"""

from __future__ import annotations

import argparse
import json
import time

from fedforget.config import RecoveryConfig, validate_config
from fedforget.federated import LocalFederation
from fedforget.testing import default_relay, make_run
from fedforget.training import state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--mode", choices=["random", "client"], default="random")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--targets", default="validation,teacher")
    args = parser.parse_args()
    deletion = (
        {"mode": "random", "share": 0.04, "deleting_clients": [0, 1, 2]}
        if args.mode == "random"
        else {"mode": "client", "deleting_clients": [5]}
    )
    deletion["round"] = args.rounds
    config = validate_config(
        {
            "clients": args.clients,
            "seed": args.seed,
            "data": {"dataset": args.dataset, "partition": args.partition, "alpha": args.alpha},
            "deletion": deletion,
            "train": {"rounds": args.rounds},
        }
    )
    run = make_run(config, args.rounds)
    out = {
        "args": vars(args),
        "round_s": round(run.seconds_per_round, 2),
        "forget_size": len(run.federation.forget_set()),
        "proximal_mu": RecoveryConfig().proximal_mu,
        "trained": run.scores(run.trained),
        "retrain": run.scores(run.retrained),
    }
    remaining = LocalFederation.from_federation(
        run.federation, run.build, config.train, drop_deleted=True, seed=config.seed
    )
    if args.mode == "client":
        remaining.clients = {c: d for c, d in remaining.clients.items() if c != 5}
    for target in args.targets.split(","):
        unlearner = build_unlearner("distill", natural_target=target)
        request = UnlearningRequest(
            forget=run.federation.forget_set(),
            num_classes=run.federation.num_classes,
            mode=args.mode,
            validation=run.validation,
        )
        context = UnlearningContext(run.initial, run.build, seed=config.seed)
        started = time.perf_counter()
        unlearned = state_to_numpy(unlearner.unlearn(run.model(run.trained), request, context))
        unlearn_s = time.perf_counter() - started
        started = time.perf_counter()
        relay = default_relay(
            unlearned,
            remaining,
            config.train.lr,
            config.seed,
            validation=run.validation,
            before=run.trained,
        )
        relay_s = time.perf_counter() - started
        out[target] = {
            "unlearned": run.scores(unlearned),
            "recovered": run.scores(relay.state),
            "unlearn_s": round(unlearn_s, 2),
            "relay_s": round(relay_s, 2),
            "hops": [
                (h.trained_on, round(h.before, 4), round(h.after, 4), h.kept) for h in relay.hops
            ],
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
