"""distill vs retrain on a backdoor deletion, in process: is the forgetting durable and cheap?

Trains an in-process FedAvg federation (the CLI's defaults: backdoor on 6 % of every client's
samples) to the deletion round with and without D_f (cached by
:func:`fedforget.testing.make_run`), then runs ``distill`` (with any option overrides), the
default relay, and ``--after`` more FedAvg rounds on the remaining data; retraining gets the
same rounds after it. Prints one JSON line: test accuracy and backdoor success after
unlearning, after the relay and at the end, the relay's hops and the unlearning's seconds.
Example (docs/methods.md, "Durable forgetting")::

    OMP_NUM_THREADS=1 python -m experiments.quality_backdoor --clients 100 --rounds 7
    OMP_NUM_THREADS=1 python -m experiments.quality_backdoor --partition dirichlet --alpha 0.3
"""

from __future__ import annotations

import argparse
import json
import time

from fedforget.config import validate_config
from fedforget.federated import LocalFederation
from fedforget.testing import default_relay, make_run
from fedforget.training import accuracy, state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7, help="rounds before the deletion")
    parser.add_argument("--after", type=int, default=3, help="FedAvg rounds after the relay")
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="{}", help="distill option overrides (JSON)")
    args = parser.parse_args()
    data = {"partition": args.partition, "alpha": args.alpha}
    config = validate_config({"clients": args.clients, "seed": args.seed, "data": data})
    run = make_run(config, args.rounds)
    federation = run.federation
    backdoor = federation.backdoor_test_set()

    def scores(state) -> dict[str, float]:
        model = run.model(state)
        return {
            "test": round(accuracy(model, run.test), 4),
            "backdoor": round(accuracy(model, backdoor), 4),
        }

    remaining = LocalFederation.from_federation(
        federation, run.build, config.train, drop_deleted=True, seed=args.seed
    )
    out = {"args": vars(args), "original": scores(run.trained)}
    out["retrain"] = {
        "unlearned": scores(run.retrained),
        "end": scores(remaining.run(run.retrained, args.after)),
    }
    unlearner = build_unlearner("distill", **json.loads(args.options))
    request = UnlearningRequest(
        federation.forget_set(), federation.num_classes, "backdoor", validation=run.validation
    )
    context = UnlearningContext(run.initial, run.build, seed=args.seed)
    started = time.perf_counter()
    unlearned = state_to_numpy(unlearner.unlearn(run.model(run.trained), request, context))
    seconds = time.perf_counter() - started
    relay = default_relay(
        unlearned,
        remaining,
        config.train.lr,
        args.seed,
        eval_samples=500,
        validation=run.validation,
        before=run.trained,
    )
    out["distill"] = {
        "seconds": round(seconds, 2),
        "unlearned": scores(unlearned),
        "relay": scores(relay.state),
        "hops": len(relay.hops),
        "hops_kept": sum(hop.kept for hop in relay.hops),
        "end": scores(remaining.run(relay.state, args.after)),
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
