"""The lab's report files (`deal-ros bench quality`, `deal-ros ablate`): NAME.json, NAME.md and a figure, written
atomically after every finished arm, into the output folder or, when it stops taking them, a rescue folder.

Why one helper: a long benchmark must never lose what has finished; both commands write the same three kinds of
file the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deal_ros.storage.files import atomic_write_text, write_or_rescue

LOG = logging.getLogger("deal_ros.lab.reports")


def write_report(out: Path, name: str, report: dict[str, Any], markdown: str, figure: str,
                 plot: Callable[[Path], None], done: str) -> Path:
    """Write NAME.json (report), NAME.md (markdown) and `figure` (by plot) into `out`, atomically; returns the folder
    they are in: `out`, or a rescue folder (warned) when `out` stops taking them, where the later ones go too.
    `done` names what the files hold ("recipes", "sets") for the warning."""
    written = write_or_rescue(out, {
        f"{name}.json": lambda p: atomic_write_text(p, json.dumps(report, indent=1)),
        f"{name}.md": lambda p: atomic_write_text(p, markdown),
        figure: plot,
    })
    if written.rescued:
        LOG.warning("cannot write the report into %s (%s): the %s done so far, and those to come, are in %s",
                    out, written.failure, done, written.folder)
    return written.folder
