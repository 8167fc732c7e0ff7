"""distill's natural-deletion tolerance on digits: clean accuracy vs how far D_f is pushed.

Uses the digits federation of ``tests/test_deletion_aware.py`` (4 clients, random 10 % on
client 0, 8 rounds) and prints, per seed and ``natural_tolerance`` (D_f's mean margin excess
over its targets, in logits), the test and D_f accuracy after unlearning and how much more
D_f's mean logit margin fell than the held-out test samples'. Run from the repository root::

    OMP_NUM_THREADS=1 python scripts/quality_tolerance.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import test_deletion_aware as setup  # noqa: E402
from conftest import digits_config  # noqa: E402

from fedforget.training import accuracy, load_numpy_state  # noqa: E402
from fedforget.unlearning import UnlearningContext, UnlearningRequest, build_unlearner  # noqa: E402

for seed in (0, 1, 2):
    federation, build, initial, state = setup._trained(digits_config, "random", seed)
    half = len(federation.test) // 2
    validation = federation.test.subset(np.arange(half))
    test = federation.test.subset(np.arange(half, len(federation.test)))
    forget = federation.forget_set()
    original = load_numpy_state(build(), state)
    before = f"test {accuracy(original, test):.4f} D_f {accuracy(original, forget):.4f}"
    print(f"seed {seed}: original {before}")
    forget_margin = setup._mean_margin(original, forget)
    test_margin = setup._mean_margin(original, test)
    for tolerance in (0.02, 0.1, 0.5):
        unlearner = build_unlearner("distill", batch_size=16, natural_tolerance=tolerance)
        request = UnlearningRequest(forget, 10, "random", validation=validation)
        model = unlearner.unlearn(
            load_numpy_state(build(), state), request, UnlearningContext(initial, build, seed=0)
        )
        drop = (forget_margin - setup._mean_margin(model, forget)) - (
            test_margin - setup._mean_margin(model, test)
        )
        print(
            f"  tolerance {tolerance}: test {accuracy(model, test):.4f} "
            f"D_f {accuracy(model, forget):.4f} D_f margin drop beyond test's {drop:.2f}"
        )
