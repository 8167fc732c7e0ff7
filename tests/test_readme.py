"""The README as a new user reads it: its Python blocks run as written, its data format is named.

Every ```` ```python ```` block is run as a script of its own (``__name__ == "__main__"``, a
fresh interpreter, an empty working folder), exactly as a reader who pastes it into a file
would, and must show that it ran: a result printed, or the deletion step in Flower's log.
The blocks are kept digits-sized so that this takes under a minute each. The shell
blocks are not run here: they train MNIST federations for minutes or need a SuperLink and
SuperNodes; the commands they show are covered by the CLI tests.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedforget.simulations.runner import WORKER_NICENESS_ENV

README = Path(__file__).resolve().parent.parent / "README.md"
README_LIMIT = 15_000
"""Characters the README may hold; longer material goes to docs/."""
BLOCK_TIMEOUT_S = 600
"""A block that runs this long hangs (each takes about a minute on 2 loaded cores)."""


def python_blocks(text: str) -> list[str]:
    """The code of every ```` ```python ```` block of ``text``, in order."""
    return re.findall(r"^```python\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_the_readme_has_python_blocks_that_parse_and_fits_its_limit() -> None:
    text = README.read_text(encoding="utf-8")
    blocks = python_blocks(text)
    assert len(blocks) >= 2
    for block in blocks:
        ast.parse(block)
    assert len(text) < README_LIMIT


def test_the_readme_names_what_a_custom_dataset_holds() -> None:
    text = README.read_text(encoding="utf-8")
    for key in ("x_train", "y_train", "x_test", "y_test"):
        assert f"`{key}`" in text, key
    assert "client_*.npz" in text and "test.npz" in text


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(python_blocks(README.read_text(encoding="utf-8")))))
def test_every_readme_python_block_runs_as_written(index: int, tmp_path: Path) -> None:
    block = python_blocks(README.read_text(encoding="utf-8"))[index]
    script = tmp_path / f"block{index}.py"
    script.write_text(block, encoding="utf-8")
    # Ray workers started by Flower's own engine would run at nice 15 (docs/architecture.md)
    env = {**os.environ, WORKER_NICENESS_ENV: "0"}
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=BLOCK_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # exit 0 is not enough: a ServerApp defined and never run also exits 0, doing nothing
    ran_a_deletion = re.search(r"deletion: step of round \d+ done", done.stderr)
    assert ran_a_deletion or done.stdout.strip(), "the block ran nothing"
