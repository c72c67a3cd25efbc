"""Progress bars that fit a log: a live bar on a terminal, one plain line every LOG_INTERVAL_S otherwise.

tqdm redraws its bar with a carriage return several times a second; in a file (CI, `ros2 launch`, a
redirect) that is one ever-growing line of megabytes. Off a terminal the bar prints a whole line instead,
at most every LOG_INTERVAL_S (or $DEAL_ROS_PROGRESS_INTERVAL_S; 0 = every update), plus its final state.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from tqdm import tqdm

from deal_ros.cli import UserError

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


def progress_bar(iterable: Iterable[Any] | None = None, *, stream: TextIO | None = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)` on stderr (or `stream`), in log lines when that is not a terminal."""
    stream = sys.stderr if stream is None else stream
    if stream.isatty():
        return tqdm(iterable, file=stream, dynamic_ncols=True, **kwargs)
    interval = log_interval_s()
    return tqdm(iterable, file=_LineWriter(stream), mininterval=interval, maxinterval=max(interval, 1.0),
                miniters=1 if interval == 0 else None, ncols=100, ascii=True, **kwargs)
