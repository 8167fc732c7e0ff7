"""The typer application, its entry point and how errors and signals end a command.

User errors (invalid values, unknown names, impossible deletions, unreadable files) print one
line on stderr and exit with code 2; no traceback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from typing import Any

import click
import typer

from fedforget.config import ConfigError
from fedforget.stopping import clear_stop, request_stop, stop_requested

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h

app = typer.Typer(
    help="Federated unlearning on the Flower engine: delete, unlearn, recover, measure.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Obtain datasets for offline use.", no_args_is_help=True)
app.add_typer(data_app, name="data")
verify_app = typer.Typer(
    help="Check on your own machine whether a model forgot (Skyeye GAN, SPD-GAN degree).",
    no_args_is_help=True,
)
app.add_typer(verify_app, name="verify")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: one-line errors with exit code 2 for user mistakes.

    Ctrl-C (or SIGTERM) stops a run within seconds: the run folder is marked
    ``interrupted``, Ray and every child process are stopped, and the exit code is 130.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    clear_stop()
    if argv is None:  # the process is this command (not a caller in Python)
        _adopt_orphans()
    previous = _install_stop_handlers()
    try:
        _dispatch(args)
        if stop_requested():  # typer turns KeyboardInterrupt into a return value
            raise KeyboardInterrupt
    except (KeyboardInterrupt, click.exceptions.Abort):
        typer.echo("interrupted", err=True)
        _end_children()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)  # Flower's worker threads may still wait on Ray
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _dispatch(args: list[str]) -> None:
    """Run the command line ``args``; user errors become one line and exit code 2."""
    group = _missing_command(args)
    if group is not None:
        _usage_error(f"missing command; see `{' '.join(['fedforget', *group, '--help'])}`")
    try:
        app(args=args, standalone_mode=False)
    except (ConfigError, click.UsageError, OSError) as err:
        _usage_error(error_message(err))


def error_message(err: BaseException) -> str:
    """The first line of a user error; an OSError as ``path: reason`` (no ``[Errno 13]``)."""
    if isinstance(err, click.ClickException):
        message = err.format_message()
    elif isinstance(err, OSError) and err.strerror:
        where = err.filename if err.filename is not None else ""
        message = f"{where}: {err.strerror.lower()}" if where else err.strerror.lower()
    else:
        message = str(err)
    return message.splitlines()[0] if message else type(err).__name__


def _missing_command(args: list[str]) -> list[str] | None:
    """The command group given without a subcommand (``[]``: no command at all), else None."""
    if any(arg in ("--help", "-h") for arg in args):
        return None
    if not args:
        return []
    if len(args) == 1 and args[0] in ("data", "verify"):
        return args
    return None


def _usage_error(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    sys.exit(EXIT_USAGE)


def _install_stop_handlers() -> dict[int, Any]:
    """Make SIGINT and SIGTERM request a stop and raise KeyboardInterrupt (main thread only).

    A process started in the background by a shell inherits SIGINT ignored; a run must stop
    on ``kill -INT`` as on Ctrl-C, so the handler is installed explicitly. Returns the
    previous handlers, to restore.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}

    def interrupt(signum: int, frame: Any) -> None:
        request_stop()  # also tells threads waiting for replies (fedforget.stopping)
        raise KeyboardInterrupt

    return {signum: signal.signal(signum, interrupt) for signum in (signal.SIGINT, signal.SIGTERM)}


def _adopt_orphans() -> None:
    """Become the child subreaper (Linux): orphaned descendants, such as Ray workers whose
    raylet stopped, are re-parented to this process, so :func:`_end_children` finds them."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


def _end_children(grace: float = 3.0) -> None:
    """Stop Ray, then terminate this process's descendants, killing those that linger."""
    import psutil

    me = psutil.Process()
    known = set(me.children(recursive=True))
    if "ray" in sys.modules:
        from fedforget.simulations.runner import shutdown_ray

        shutdown_ray()
    for _ in range(3):  # orphans of stopped helpers arrive as new children
        children = list(known | set(me.children(recursive=True)))
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.terminate()
        _, alive = psutil.wait_procs(children, timeout=grace)
        for child in alive:
            with contextlib.suppress(psutil.Error):
                child.kill()
        psutil.wait_procs(alive, timeout=grace)
        known = set()
        if not me.children(recursive=True):
            return
