"""The ``fedforget`` command line.

User errors (invalid values, unknown names, impossible deletions) print one line on stderr
and exit with code 2; no traceback. The run commands (``simulate``, ``compare``, ``sweep``,
``run-config``) share one option set made from the configuration's fields
(:mod:`fedforget.cli.options`).
"""

# isort: off
# The commands register on import, and `fedforget --help` lists them in this order.
from fedforget.cli import runs  # noqa: F401
from fedforget.cli import audit, verify, commands  # noqa: F401

# isort: on
from fedforget.cli.app import EXIT_INTERRUPTED, EXIT_USAGE, app, data_app, main, verify_app
from fedforget.cli.options import RUN_OPTIONS, config_from_options, read_config_file
from fedforget.cli.parsing import (
    parse_client_groups,
    parse_delete,
    parse_ids,
    parse_options,
    parse_rounds,
    parse_share,
)
from fedforget.cli.runs import _simulate_params, check_command, run_config_argument

__all__ = [
    "EXIT_INTERRUPTED",
    "EXIT_USAGE",
    "RUN_OPTIONS",
    "_simulate_params",
    "app",
    "check_command",
    "config_from_options",
    "data_app",
    "main",
    "parse_client_groups",
    "parse_delete",
    "parse_ids",
    "parse_options",
    "parse_rounds",
    "parse_share",
    "read_config_file",
    "run_config_argument",
    "verify_app",
]
