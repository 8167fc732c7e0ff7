"""distill vs retrain on the sweep's ``overfit-random`` cell, in process, calibrated attack.

Builds the cell's configuration exactly as ``fedforget sweep`` does
(:func:`fedforget.simulations.sweep.cell_config`), trains the original and the retrained
federation to the deletion round with in-process FedAvg, trains the calibrated attack's
reference federations (:func:`fedforget.attacks_reference.attach_references`), then runs
``distill`` (with any option overrides) followed by the relay. Prints one JSON line per model:
test and D_f accuracy, the attack's D_f score and power, and the share of retained (member),
test (non-member) and D_f samples the attack calls members, which says whether D_f sits with
the members or the non-members of the *same* model. Example (docs/methods-quality.md)::

    OMP_NUM_THREADS=1 python -m experiments.quality_overfit --seed 0
    OMP_NUM_THREADS=1 python -m experiments.quality_overfit --seed 0 --options '{"lr": 0.01}'

``--cache DIR`` keeps the trained models and reference confidences between runs.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from fedforget.attacks import ModelOutputs, build_attack
from fedforget.attacks_reference import attach_references
from fedforget.config import validate_config
from fedforget.data import build_federation
from fedforget.federated import LocalFederation
from fedforget.metrics import Evaluator
from fedforget.models import build_model
from fedforget.simulations.sweep import Cell, cell_config
from fedforget.testing import default_relay, load_array_groups, save_array_groups
from fedforget.training import load_numpy_state, predict_proba, state_to_numpy
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner

REFERENCE_SETS = ("members", "non_members", "forget")  # Evaluator.attack_sets' order


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", default="overfit-random")
    parser.add_argument("--partition", default="iid")
    parser.add_argument("--options", default="{}", help="distill option overrides (JSON)")
    parser.add_argument("--cache", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    base = validate_config({"mia": "calibrated"})
    config = cell_config(base, Cell(args.scenario, args.partition, args.seed), Path("/tmp"))
    config = config.model_copy(update={"mia": "calibrated"})
    federation = build_federation(config)

    def build():
        return build_model(
            config.model, federation.num_classes, federation.in_channels, federation.image_size
        )

    evaluator = Evaluator(federation, None, config.seed, "calibrated")
    initial, trained, retrained = _trained(args, config, federation, build, evaluator)
    remaining = LocalFederation.from_federation(
        federation, build, config.train, drop_deleted=True, seed=args.seed
    )
    report = _reporter(federation, build, evaluator, args.seed)
    report("original", trained)
    report("retrain", retrained)
    unlearner = build_unlearner("distill", **json.loads(args.options))
    request = UnlearningRequest(
        federation.forget_set(),
        federation.num_classes,
        config.deletion.mode,
        validation=federation.validation,
    )
    events: list[tuple] = []
    context = UnlearningContext(
        initial, build, seed=args.seed, progress=lambda *e: events.append(e)
    )
    started = time.perf_counter()
    model = unlearner.unlearn(load_numpy_state(build(), trained), request, context)
    seconds = time.perf_counter() - started
    unlearned = state_to_numpy(model)
    steps = events[-1][1] if events else 0
    report("distill", unlearned, seconds=round(seconds, 1), steps=steps)
    relay = default_relay(
        unlearned,
        remaining,
        config.train.lr,
        args.seed,
        eval_samples=500,
        validation=federation.validation,
        before=trained,
    )
    report("distill+relay", relay.state, hops=len(relay.hops))


def _trained(args, config, federation, build, evaluator):
    """Initial, original and retrained weights (cached under ``--cache`` when given)."""
    name = f"{args.scenario}_{args.partition}_{args.seed}.npz".replace("%", "pct")
    path = args.cache / name if args.cache else None
    if path is not None and path.exists():
        saved = load_array_groups(path)
        evaluator.set_reference([saved["reference"][k] for k in REFERENCE_SETS])
        return saved["initial"], saved["trained"], saved["retrained"]
    torch.manual_seed(args.seed)
    initial = state_to_numpy(build())
    rounds = config.deletion.round
    runs = [
        LocalFederation.from_federation(
            federation, build, config.train, drop_deleted=dropped, seed=args.seed
        ).run(initial, rounds)
        for dropped in (False, True)
    ]
    attach_references(evaluator, config, build)
    if path is not None:
        reference = dict(zip(REFERENCE_SETS, evaluator.reference, strict=True))
        groups = {"initial": initial, "trained": runs[0], "retrained": runs[1]}
        save_array_groups(path, {**groups, "reference": reference})
    return initial, runs[0], runs[1]


def _reporter(federation, build, evaluator, seed):
    """``report(label, state, **extra)``: print one model's metrics as a JSON line."""
    sets = (evaluator.retain, federation.test, evaluator.forget)

    def member_rates(model) -> dict[str, float]:
        outputs = [
            ModelOutputs(predict_proba(model, d.x), d.y, r)
            for d, r in zip(sets, evaluator.reference, strict=True)
        ]
        attack = build_attack("calibrated")
        return {
            name: round(100 * attack.run(*outputs[:2], outputs[i], seed=seed).forget_score, 1)
            for name, i in (("retained", 0), ("test", 1), ("forget", 2))
        }

    def report(label: str, state, **extra) -> None:
        model = load_numpy_state(build(), state)
        metrics = evaluator.evaluate(model)
        row = {
            "model": label,
            "test": round(100 * metrics.test_accuracy, 2),
            "forget": round(100 * metrics.forget_accuracy, 1),
            "mia": round(100 * metrics.mia_success, 1),
            "power": round(metrics.mia_power, 3),
            "called_member": member_rates(model),
            **extra,
        }
        print(json.dumps(row), flush=True)

    return report


if __name__ == "__main__":
    main()
