"""PNG figures of the commands (`train`'s loss curves and held-out mIoU): drawn by the lab when it is installed.

A figure is a convenience beside the numbers (train_log.json): without the lab extra's matplotlib it is left
out with one line, and a disk that refuses it is a warning, never a failed run.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from deal_ros.errors import one_line

LOG = logging.getLogger("deal_ros.train")


def write_figure(path: Path, draw: Callable[[ModuleType], None]) -> None:
    """draw(deal_ros.lab.plots) writes `path`; a missing matplotlib or an OSError is logged, not raised."""
    try:
        from deal_ros.lab import plots
    except ImportError:
        LOG.info("%s not written: plots need matplotlib (pip install 'deal_ros[lab]'); the numbers are in "
                 "train_log.json", path.name)
        return
    try:
        draw(plots)
    except OSError as exc:
        LOG.warning("could not write %s (%s); the numbers are in train_log.json", path, one_line(exc, 200))
