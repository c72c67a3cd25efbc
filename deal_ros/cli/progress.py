"""Progress bars that fit a log: a live bar on a terminal, one plain line every LOG_INTERVAL_S otherwise.

tqdm redraws its bar with a carriage return several times a second; in a file (CI, `ros2 launch`, a
redirect) that is one ever-growing line of megabytes. Off a terminal the bar prints a whole line instead,
at most every LOG_INTERVAL_S (or $DEAL_ROS_PROGRESS_INTERVAL_S; 0 = every update), plus its final state.
tqdm is the lab extra's: on the robot's install (`pip install .`) the same lines come from `PlainProgress`.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, TextIO

from deal_ros.cli import UserError

if TYPE_CHECKING:
    from tqdm import tqdm

LOG_INTERVAL_S = 30.0
"""Seconds between progress lines when the output is not a terminal."""
INTERVAL_VARIABLE = "DEAL_ROS_PROGRESS_INTERVAL_S"


def log_interval_s() -> float:
    """Seconds between progress lines off a terminal: $DEAL_ROS_PROGRESS_INTERVAL_S, else LOG_INTERVAL_S."""
    text = os.environ.get(INTERVAL_VARIABLE, "")
    if not text:
        return LOG_INTERVAL_S
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds < float("inf"):
        raise UserError(f"{INTERVAL_VARIABLE} must be a number of seconds >= 0, got {text!r}")
    return seconds


class _LineWriter:
    """A stream that writes each tqdm redraw as one line (the carriage returns and padding dropped)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")

    def flush(self) -> None:
        self.stream.flush()


class PlainProgress:
    """The part of tqdm's interface the commands use, as plain lines: for an install without tqdm."""

    def __init__(self, iterable: Iterable[Any] | None, stream: TextIO, interval_s: float, total: int | None = None,
                 initial: int = 0, desc: str = "", unit: str = "it", disable: bool = False) -> None:
        self.iterable, self.stream, self.interval_s = iterable, stream, interval_s
        self.total = total if total is not None else (len(iterable) if isinstance(iterable, Sized) else None)
        self.n, self.desc, self.unit, self.disable = initial, desc, unit, disable
        self.postfix = ""
        self._last_line = -float("inf")
        self._printed_n: int | None = None

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable or ():
            yield item
            self.update(1)
        self.close()

    def __enter__(self) -> PlainProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.n += n
        if time.monotonic() - self._last_line >= self.interval_s:
            self._line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def write(self, text: str) -> None:
        self.stream.write(text + "\n")

    def close(self) -> None:
        if self._last_line != float("inf"):
            if self._printed_n != self.n:
                self._line()
            self._last_line = float("inf")

    def _line(self) -> None:
        if self.disable:
            return
        of = f"/{self.total}" if self.total is not None else ""
        self.stream.write(f"{self.desc}: {self.n}{of} {self.unit}" + (f" [{self.postfix}]" if self.postfix else "")
                          + "\n")
        self.stream.flush()
        self._last_line, self._printed_n = time.monotonic(), self.n


def progress_bar(iterable: Iterable[Any] | None = None, *, stream: TextIO | None = None,
                 **kwargs: Any) -> tqdm | PlainProgress:
    """`tqdm(iterable, **kwargs)` on stderr (or `stream`), in log lines when that is not a terminal or tqdm is
    not installed."""
    stream = sys.stderr if stream is None else stream
    if importlib.util.find_spec("tqdm") is None:
        return PlainProgress(iterable, stream, log_interval_s(), **kwargs)
    from tqdm import tqdm

    if stream.isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    interval = log_interval_s()
    return tqdm(iterable, file=_LineWriter(stream), mininterval=interval, maxinterval=max(interval, 1.0),
                miniters=1 if interval == 0 else None, ncols=100, ascii=True, **kwargs)
