"""One error base for deal_ros, so that every failure a person can fix reaches them as one clear line.

Every error the package raises on purpose derives from :class:`DealRosError` and says what (the path,
key, topic or tag) and why. The command line turns these, and every OSError, into one line and exit
code 2 (deal_ros.cli.main); a traceback is shown only with ``-v``. Most also derive from ValueError
or RuntimeError, as they did before, so callers that catch those keep working.
"""

from __future__ import annotations

import errno
import os

__all__ = ["DealRosError", "DegenerateDataError", "FrameError", "OutputError", "UserError", "describe_os_error",
           "one_line", "os_error_cause"]

MAX_LINE_CHARS = 1000
"""A message longer than this is cut (a line a person can read, not a 15 KB dump)."""


class DealRosError(Exception):
    """Base of deal_ros's own errors: the message names what is wrong and why, meant for a person."""


class UserError(DealRosError):
    """Bad input to a command (a path, a topic, an option): printed as one line, exit code 2."""


class OutputError(DealRosError, OSError):
    """An output file or folder cannot be written (not a folder, read-only, full); names the path and cause."""


class FrameError(DealRosError, ValueError):
    """A frame that cannot be used as given (RGB and depth sizes differ, wrong dtype or layout): that frame only."""


class DegenerateDataError(DealRosError, ValueError):
    """Data that cannot train anything (depth without a valid pixel, constant depth); `reason` is a short key."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def one_line(exc: BaseException | str, limit: int = MAX_LINE_CHARS) -> str:
    """The message on one line (whitespace collapsed) and at most `limit` characters."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def os_error_cause(exc: OSError) -> str:
    """The cause of an OSError without its paths, e.g. 'Read-only file system (EROFS)'."""
    if isinstance(exc, DealRosError) or not exc.strerror:
        return one_line(exc) or type(exc).__name__
    code = errno.errorcode.get(exc.errno) if isinstance(exc.errno, int) else None
    return exc.strerror + (f" ({code})" if code else "")


def describe_os_error(exc: OSError) -> str:
    """'PATH: cause' for an OSError, e.g. '/data/out: Read-only file system (EROFS)'; no errno noise."""
    if isinstance(exc, DealRosError):
        return one_line(exc)
    cause = os_error_cause(exc)
    paths = [os.fsdecode(p) for p in (exc.filename, exc.filename2) if p is not None]
    return one_line(f"{' -> '.join(paths)}: {cause}" if paths else cause)
