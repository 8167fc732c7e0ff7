"""distill's natural-deletion tolerance on digits: clean accuracy vs how far D_f is pushed.

The digits federation of ``tests/test_deletion_aware.py`` (:func:`fedforget.testing.trained_digits`:
4 clients, random 10 % on client 0, 8 rounds). Prints, per seed and ``natural_tolerance``
(D_f's mean margin excess over its targets, in logits), the test and D_f accuracy after
unlearning and how much more D_f's mean logit margin fell than the held-out test samples'.
Example::

    OMP_NUM_THREADS=1 python -m experiments.quality_tolerance
"""

from __future__ import annotations

import argparse

import numpy as np

from fedforget.testing import mean_logit_margin, trained_digits
from fedforget.training import accuracy, load_numpy_state
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tolerances", default="0.02,0.1,0.5")
    args = parser.parse_args()
    for seed in (int(s) for s in args.seeds.split(",")):
        report_seed(seed, [float(t) for t in args.tolerances.split(",")])


def report_seed(seed: int, tolerances: list[float]) -> None:
    """Train the seed's federation once, then unlearn at each tolerance from the same model."""
    run = trained_digits("random", seed)
    federation, build = run.federation, run.build
    half = len(federation.test) // 2
    validation = federation.test.subset(np.arange(half))
    test = federation.test.subset(np.arange(half, len(federation.test)))
    forget = federation.forget_set()
    original = load_numpy_state(build(), run.trained)
    before = f"test {accuracy(original, test):.4f} D_f {accuracy(original, forget):.4f}"
    print(f"seed {seed}: original {before}", flush=True)
    forget_margin = mean_logit_margin(original, forget)
    test_margin = mean_logit_margin(original, test)
    for tolerance in tolerances:
        unlearner = build_unlearner("distill", batch_size=16, natural_tolerance=tolerance)
        request = UnlearningRequest(forget, 10, "random", validation=validation)
        context = UnlearningContext(run.initial, build, seed=0)
        model = unlearner.unlearn(load_numpy_state(build(), run.trained), request, context)
        drop = (forget_margin - mean_logit_margin(model, forget)) - (
            test_margin - mean_logit_margin(model, test)
        )
        print(
            f"  tolerance {tolerance}: test {accuracy(model, test):.4f} "
            f"D_f {accuracy(model, forget):.4f} D_f margin drop beyond test's {drop:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
