"""Wall seconds (best of N) of the imports a ClientApp process pays per message.

Each import runs in a fresh interpreter, single-threaded, as a deployment's ClientApp
process starts: Flower's client API with torch alone, then fedforget's ClientApp module
(which imports them too). Prints one line per import and the machine's load averages, since
a loaded machine stretches every figure. Example (docs/deployment.md)::

    OMP_NUM_THREADS=1 python -m experiments.import_cost --repeats 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time

IMPORTS = ("import flwr.clientapp, torch", "import fedforget.clients.app")


def best_seconds(statement: str, repeats: int, python: str) -> float:
    """The fastest of ``repeats`` fresh interpreters running ``statement``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([python, "-c", statement], env=env, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="interpreters per import")
    parser.add_argument("--python", default=sys.executable, help="interpreter to time")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    for statement in IMPORTS:
        seconds = best_seconds(statement, args.repeats, args.python)
        print(f"{statement}: best of {args.repeats} = {seconds:.3f} s", flush=True)
    load = ", ".join(f"{value:.2f}" for value in os.getloadavg())
    print(f"load average (1, 5, 15 min): {load}")


if __name__ == "__main__":
    main()
