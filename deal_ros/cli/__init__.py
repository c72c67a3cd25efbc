"""The `deal-ros` command: one entry point, one module per subcommand.

Each subcommand module has `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. :func:`main` is the one place that turns errors into messages:
every :class:`~deal_ros.errors.DealRosError` and every OSError becomes one line naming the path and
the cause, exit code 2; Ctrl-C exits 130 quietly, even while the heavy modules are still importing
(they are imported inside main, and only the chosen subcommand's). Tracebacks only with ``-v``.

SIGTERM (what `timeout`, `docker stop`, systemd and Slurm preemption send) stops a command as the first
Ctrl-C does (:class:`Stopped`, a KeyboardInterrupt: `train` saves what it trained), exit code 143. Once a
command that saves when stopped (:func:`save_on_stop`) is stopping, further SIGINT / SIGTERM are ignored
with one line each, so that a second Ctrl-C cannot abort the final save; only SIGKILL (kill -9) ends it
then, and loses what was not saved; the same holds once such a command ends on an error and saves
(:func:`hold_stop_signals`). Elsewhere (e.g. while torch imports) a second Ctrl-C stops again. These are the
process's only SIGINT / SIGTERM handlers: a torchrun rank's SIGTERM (torchrun stops every rank when one
fails) arrives as Stopped too, and `train` turns it into the rank's one line.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

from deal_ros.errors import DealRosError, UserError, describe_os_error, one_line

__all__ = ["SUBCOMMANDS", "Stopped", "UserError", "add_set_argument", "build_parser", "config_keys_text",
           "hold_stop_signals", "main", "parse_overrides", "save_on_stop", "stop_between_steps", "stop_exit_code",
           "stop_reason"]

SUBCOMMANDS = ("demo", "info", "train", "label", "eval", "bench", "ablate", "export")
INTERRUPTED = 130
"""Exit code after Ctrl-C (128 + SIGINT), what shells report for an interrupted command."""
USER_ERROR = 2
INTERNAL_ERROR = 1
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _StopState:
    """What the signal handler of main knows about the command it runs."""

    first: str | None = None
    """What is stopping the command: the signal's name, or 'an error'."""
    saves: bool = False
    """The command saves its work when stopped (save_on_stop)."""
    request_stop: Callable[[], None] | None = None
    """Set inside stop_between_steps: the first signal asks the loop to stop instead of raising."""
    pending: int | None = None
    """The signal that asked the loop to stop, raised as Stopped once the loop has returned."""


_STOP = _StopState()


def save_on_stop() -> None:
    """Declare that from now on this command saves its work when stopped: a later signal must not abort that save."""
    _STOP.first, _STOP.saves = None, True  # a signal swallowed before (inside an import) does not count


@contextlib.contextmanager
def stop_between_steps(request_stop: Callable[[], None]) -> Iterator[None]:
    """Inside: the first SIGINT / SIGTERM calls request_stop (the loop ends after its current step) and is
    raised as Stopped when the block ends.

    A Stopped raised inside a step would leave an update half applied (some parameter groups stepped, the
    step count not) or a step done without its history entry, and the save that follows would keep that.
    """
    _STOP.request_stop, _STOP.pending = request_stop, None
    try:
        yield
    finally:
        _STOP.request_stop = None
    if _STOP.pending is not None:
        raise Stopped(_STOP.pending)


def hold_stop_signals() -> None:
    """The command is ending on an error and saves what it did: from now on SIGINT / SIGTERM are ignored (one line)."""
    _STOP.first, _STOP.saves = _STOP.first or "an error", True


class Stopped(KeyboardInterrupt):
    """Raised in the main thread by the first SIGINT or SIGTERM, so that SIGTERM stops a command as Ctrl-C does."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def stop_exit_code(exc: KeyboardInterrupt) -> int:
    """128 + the signal's number (130 for Ctrl-C, 143 for SIGTERM), what shells report for a stopped command."""
    return 128 + exc.signum if isinstance(exc, Stopped) else INTERRUPTED


def stop_reason(exc: KeyboardInterrupt) -> str:
    """'interrupted' (Ctrl-C) or 'stopped by SIGTERM', for the line that says what was saved."""
    if isinstance(exc, Stopped) and exc.signum != signal.SIGINT:
        return f"stopped by {signal.Signals(exc.signum).name}"
    return "interrupted"


@contextlib.contextmanager
def _stop_signals(prog: str) -> Iterator[None]:
    """The first SIGINT / SIGTERM raises Stopped; after save_on_stop, later ones are ignored with one line.

    Signals ignored when the command started (`nohup`, a background job's SIGINT) stay ignored. The previous
    handlers come back afterwards (main also runs in-process, in tests).
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        if _STOP.first is None or not _STOP.saves:
            _STOP.first = signal.Signals(signum).name
            if _STOP.request_stop is None:
                raise Stopped(signum)
            _STOP.pending = signum
            _STOP.request_stop()
            return
        print(f"\n{prog}: {signal.Signals(signum).name} ignored: still stopping after "
              f"{_STOP.first} and saving what was done (kill -9 would lose it)",
              file=sys.stderr, flush=True)

    previous = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
    _STOP.first, _STOP.saves = None, False
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, handle)
    try:
        yield
    finally:
        _STOP.first, _STOP.saves, _STOP.request_stop, _STOP.pending = None, False, None, None
        for signum, handler in previous.items():
            signal.signal(signum, handler)


class _ConfigOverride(argparse.Action):
    """Collects --set KEY=VALUE items; `--set help` prints every config key instead and exits."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
        if values == "help":  # on stdout, like --help
            sys.stdout.write(config_keys_text())
            parser.exit()
        setattr(namespace, self.dest, [*getattr(namespace, self.dest), values])


def add_set_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup, text: str) -> None:
    """The --set option of a subcommand (`text` says what it applies to); `--set help` lists the keys."""
    parser.add_argument("--set", dest="overrides", action=_ConfigOverride, default=[], metavar="KEY=VALUE",
                        help=f"{text} (repeatable; `--set help` lists every key with its default)")


def _value_text(value: Any) -> str:
    """A default as one would write it after --set KEY= (YAML)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value) if value != "" else "''"


def config_keys_text() -> str:
    """Every config key with its default, choices or bounds and description, from the schema's declaration."""
    import textwrap

    from deal_ros.config import config_keys

    kinds = {bool: "true/false", int: "integer", float: "number", str: "text"}
    lines = ["config keys (--set KEY=VALUE, the value in YAML; the same keys as a config file's):", ""]
    for key in config_keys():
        bounds = key.setting.bounds
        allowed = (" | ".join(map(str, key.choices)) if key.choices
                   else f"{kinds.get(key.hint, 'list')} {bounds.text()}" if bounds else kinds.get(key.hint, "list"))
        lines.append(f"{key.key}={_value_text(key.default)}  ({allowed})")
        lines.extend(textwrap.wrap(key.setting.doc, 110, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines) + "\n"


def _chosen_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option), if it is one of ours."""
    word = next((a for a in argv if not a.startswith("-")), None)
    return word if word in SUBCOMMANDS else None


LAB_PACKAGES = ("matplotlib", "tqdm", "skimage")
"""What `pip install 'deal_ros[lab]'` adds (demo, ablate, bench, plots): the robot's install has none of them."""


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; with `only`, just that subcommand's module is imported (a faster start)."""
    parser = argparse.ArgumentParser(
        prog="deal-ros",
        description="Train, label and evaluate DEAL-supervised CAM segmentation, without ROS.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging, and tracebacks with errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS if only is None else (only,):
        try:
            module = importlib.import_module(f"deal_ros.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"deal_ros.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand; returns its exit code (0 ok, 1 internal error, 2 user or file-system error, 130 Ctrl-C)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    command = _chosen_command(argv)
    prog = f"deal-ros {command}" if command else "deal-ros"
    verbose = any(a in ("-v", "--verbose") for a in argv)
    with _stop_signals(prog):
        code = _run(argv, prog, command, verbose)
    distributed = sys.modules.get("deal_ros.training.distributed")
    if distributed is not None and distributed.exit_without_teardown():  # a torchrun job that lost a rank
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _run(argv: list[str], prog: str, command: str | None, verbose: bool) -> int:
    """main without the signal handlers: the one place that turns errors into messages and exit codes."""
    try:
        parser = build_parser(command)
        args = parser.parse_args(argv)
        verbose = args.verbose
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.INFO,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print(f"\n{prog}: {stop_reason(exc)}", file=sys.stderr)
        return stop_exit_code(exc)
    except BrokenPipeError:  # `deal-ros info bag | head`: the reader left, nothing to report
        _silence_stdout()
        return INTERNAL_ERROR
    except (DealRosError, OSError) as exc:
        _report(prog, describe_os_error(exc) if isinstance(exc, OSError) else one_line(exc), verbose)
        return USER_ERROR
    except Exception as exc:  # a bug: say where, keep the traceback for -v; or the lab extra is missing
        missing = exc.name.split(".")[0] if isinstance(exc, ModuleNotFoundError) and exc.name else ""
        if missing in LAB_PACKAGES:
            _report(prog, f"needs {missing}, which comes with the lab extra: pip install 'deal_ros[lab]'", verbose)
            return USER_ERROR
        _report(prog, f"internal error {_origin(exc)}{type(exc).__name__}: {one_line(exc, 300)} "
                      "(run with -v for the traceback)", verbose)
        return INTERNAL_ERROR


def _report(prog: str, message: str, verbose: bool) -> None:
    """The one error line (after the traceback, with -v)."""
    if verbose:
        import traceback

        traceback.print_exc()
    print(f"{prog}: error: {message}", file=sys.stderr)


def _origin(exc: BaseException) -> str:
    """'at file.py:123 ' of the innermost frame raising `exc` (so a one-line report still says where)."""
    tb = exc.__traceback__
    if tb is None:
        return ""
    while tb.tb_next is not None:
        tb = tb.tb_next
    return f"at {tb.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} "


def _silence_stdout() -> None:
    """After a broken pipe, point stdout at /dev/null so that the interpreter's final flush stays quiet."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
