"""FedAU on digits, in-process: forgotten / kept before, after FedAU and after a retrain.

The settings of ``tests/test_fedau.py`` (:func:`fedforget.testing.fedau_outcome`, 6 FedAvg
rounds, LeNet-5): ``class`` (every client deletes its 3s), ``threes`` (client 0, holding every
3, leaves), ``backdoor`` (client 0, the attacker, leaves) and ``samples`` (10 % triggered
samples over 4 clients, a mode FedAU refuses: the experiment applies the code's sample-level
operation anyway, to measure it). Prints one JSON line per setting and seed. Example::

    OMP_NUM_THREADS=1 python -m experiments.quality_fedau --kinds class,threes --seeds 0,1 \
        --option joint=false
"""

from __future__ import annotations

import argparse
import json

import torch

from fedforget.testing import FEDAU_KINDS, fedau_outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--kinds", default="class,threes,backdoor", help=f"of {', '.join(FEDAU_KINDS)}"
    )
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--option", action="append", default=[], help="KEY=VALUE (JSON value)")
    args = parser.parse_args()
    kinds = args.kinds.split(",")
    unknown = sorted(set(kinds) - set(FEDAU_KINDS))
    if unknown:
        parser.error(f"unknown kinds {unknown}: choose from {', '.join(FEDAU_KINDS)}")
    torch.set_num_threads(1)
    options = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.option)}
    for kind in kinds:
        for seed in (int(s) for s in args.seeds.split(",")):
            row = {"kind": kind, "seed": seed, "options": options}
            print(json.dumps({**row, **fedau_outcome(kind, seed, options)}), flush=True)


if __name__ == "__main__":
    main()
