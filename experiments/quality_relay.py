"""The recovery relay on a very skewed federation: paper 000's plain relay vs the bounded policy.

Trains an in-process FedAvg federation on a skewed partition, then runs from the same model
(a) the plain relay (every client scores, the single weakest trains at the federation's lr,
the result is always forwarded) and (b) :func:`run_relay`
(improvement-only, several weakest clients per hop with a proximal term, bounded candidates).
Prints JSON. Example::

    OMP_NUM_THREADS=1 python -m experiments.quality_relay --partition shards --shards 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from fedforget.config import RecoveryConfig, validate_config
from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.models import build_model
from fedforget.recovery import in_process_callbacks, run_relay
from fedforget.training import accuracy, load_numpy_state, state_to_numpy


def plain_relay(state, clients, evaluate, train, hops, lr, min_accuracy):
    """Paper 000's plain relay: the weakest client trains, its result is always forwarded."""
    for _ in range(hops):
        scores = evaluate([state], clients)[0]
        weakest = min(scores, key=lambda c: scores[c].accuracy)
        if scores[weakest].accuracy >= min_accuracy:
            break
        (update,) = train(state, [weakest], lr, 0.0)
        state = update.state
    return state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--partition", default="shards")
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mu", default="1.0", help="proximal mu values to try, comma-separated")
    parser.add_argument("--per-hop", type=int, default=None, help="override clients_per_hop")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = validate_config(
        {
            "clients": args.clients,
            "seed": args.seed,
            "data": {
                "dataset": args.dataset,
                "partition": args.partition,
                "alpha": args.alpha,
                "shards_per_client": args.shards,
            },
            "deletion": {"mode": "random", "share": 0.01, "round": args.rounds},
            "train": {"rounds": args.rounds},
        }
    )
    federation = build_federation(config)

    def build():
        return build_model("lenet5", federation.num_classes, 1, federation.image_size)

    torch.manual_seed(args.seed)
    local = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=True, seed=args.seed
    )
    state = local.run(state_to_numpy(build()), args.rounds)
    recovery = RecoveryConfig()
    if args.per_hop is not None:
        recovery.clients_per_hop = args.per_hop
    evaluate, train = in_process_callbacks(local, recovery.eval_samples, 1, seed=args.seed)
    clients = sorted(local.clients)
    test = lambda s: round(accuracy(load_numpy_state(build(), s), federation.test), 4)  # noqa: E731
    out = {"args": vars(args), "recovery": recovery.model_dump(), "before": test(state)}
    started = time.perf_counter()
    plain = plain_relay(
        state, clients, evaluate, train, recovery.max_hops, config.train.lr, recovery.min_accuracy
    )
    out["plain"] = {"test": test(plain), "seconds": round(time.perf_counter() - started, 1)}
    for mu in [float(m) for m in args.mu.split(",")]:
        recovery.proximal_mu = mu
        started = time.perf_counter()
        result = run_relay(
            state, clients, evaluate, train, recovery, config.train.lr, seed=args.seed
        )
        out[f"policy_mu={mu}"] = {
            "test": test(result.state),
            "seconds": round(time.perf_counter() - started, 1),
            "objective": [round(result.start_objective, 4), round(result.objective, 4)],
            "hops": [(h.trained_on, h.lr, round(h.after, 4), h.kept) for h in result.hops],
            "evaluations": result.evaluations,
            "trainings": result.trainings,
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
