"""Membership attacks with power: an overfitting federation, distill vs retrain under each attack.

Few samples per client and many local epochs make the federation memorise. Reference models
for the calibrated attack are federations of the same settings trained on auxiliary samples
that no client holds (the complement of ``data.train_samples``). Prints JSON: each attack's
power on the original model and its D_f score for the original, retrained and unlearned
models. Example (docs/methods-quality.md)::

    OMP_NUM_THREADS=1 python -m experiments.quality_mia

``--lr``, ``--momentum``, ``--batch-size`` and ``--model`` vary the local training (levers of
memorisation); ``--attack-only`` scores the original and retrained models only (no distill,
no relay), to search settings faster.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from fedforget.attacks import ModelOutputs, attack_names, build_attack, reference_confidences
from fedforget.config import validate_config
from fedforget.data import build_federation
from fedforget.data.deletion import kept_train_indices
from fedforget.data.sources import build_source
from fedforget.federated import LocalFederation
from fedforget.models import build_model
from fedforget.testing import default_relay
from fedforget.training import accuracy, load_numpy_state, predict_proba, state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner

VALIDATION = 2000  # the server's declared validation set: the first test samples


def preset(args) -> dict:
    """The overfitting scenario's settings (a sweep preset)."""
    return {
        "clients": args.clients,
        "seed": args.seed,
        "data": {"dataset": args.dataset, "train_samples": args.train_samples},
        "deletion": {"mode": "random", "share": args.share, "round": args.rounds},
        "train": {
            "rounds": args.rounds,
            "local_epochs": args.local_epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "momentum": args.momentum,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--share", type=float, default=0.1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--local-epochs", type=int, default=10)
    parser.add_argument("--references", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--attack-only", action="store_true", help="skip distill and the relay")
    args = parser.parse_args()
    torch.set_num_threads(1)
    config = validate_config(preset(args))
    federation = build_federation(config)

    def build():
        return build_model(args.model, federation.num_classes, 1, federation.image_size)

    torch.manual_seed(args.seed)
    initial = state_to_numpy(build())
    started = time.perf_counter()
    trained = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=False, seed=args.seed
    ).run(initial, args.rounds)
    train_s = time.perf_counter() - started
    remaining = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=True, seed=args.seed
    )
    retrained = remaining.run(initial, args.rounds)

    test = federation.test
    non_members = test.subset(np.arange(VALIDATION, len(test)))
    members = federation.train.subset(federation.retain_indices())
    forget = federation.forget_set()

    models = {"original": trained, "retrain": retrained}
    if not args.attack_only:
        models.update(_unlearn(args, config, federation, build, initial, trained, remaining))

    # Reference federations on auxiliary data: the training samples no client holds.
    bundle = build_source(args.dataset).load()
    unused = np.setdiff1d(np.arange(len(bundle.train)), kept_train_indices(bundle, config))
    aux_rng = np.random.default_rng(1000 + args.seed)
    sets = [(d.x, d.y) for d in (members, non_members, forget)]

    def train_reference(k: int):
        draw = bundle.train.subset(aux_rng.choice(unused, args.train_samples, replace=False))
        parts = np.array_split(np.arange(len(draw)), args.clients)
        clients = {c: draw.subset(p) for c, p in enumerate(parts)}
        torch.manual_seed(10_000 + k)
        ref = LocalFederation(
            clients,
            build,
            epochs=args.local_epochs,
            lr=config.train.lr,
            momentum=config.train.momentum,
            batch_size=config.train.batch_size,
            seed=10_000 + k,
        ).run(state_to_numpy(build()), args.rounds)
        model = load_numpy_state(build(), ref)
        return lambda x: predict_proba(model, x)

    started = time.perf_counter()
    ref_members, ref_non, ref_forget = reference_confidences(train_reference, args.references, sets)
    refs_s = time.perf_counter() - started

    out = {"preset": preset(args), "train_s": round(train_s, 1), "references_s": round(refs_s, 1)}
    for label, state in models.items():
        model = load_numpy_state(build(), state)
        outputs = [
            ModelOutputs(predict_proba(model, d.x), d.y, r)
            for d, r in zip(
                (members, non_members, forget), (ref_members, ref_non, ref_forget), strict=True
            )
        ]
        row = {
            "test": round(accuracy(model, non_members), 4),
            "forget": round(accuracy(model, forget), 4),
        }
        for name in attack_names():
            result = build_attack(name).run(*outputs, seed=args.seed)
            row[name] = {"score": round(result.forget_score, 4), "power": round(result.power, 4)}
        out[label] = row
    print(json.dumps(out))


def _unlearn(args, config, federation, build, initial, trained, remaining) -> dict:
    """distill's model after the unlearning alone and after the default relay."""
    validation = federation.test.subset(np.arange(VALIDATION))
    forget = federation.forget_set()
    unlearner = build_unlearner("distill")
    request = UnlearningRequest(forget, federation.num_classes, "random", validation=validation)
    context = UnlearningContext(initial, build, seed=args.seed)
    unlearned = state_to_numpy(
        unlearner.unlearn(load_numpy_state(build(), trained), request, context)
    )
    recovered = default_relay(
        unlearned, remaining, config.train.lr, args.seed, validation=validation, before=trained
    ).state
    return {"distill": unlearned, "distill+relay": recovered}


if __name__ == "__main__":
    main()
