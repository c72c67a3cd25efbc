"""Hot reload of the segmenter's weights from the trainer's checkpoint file (separate processes).

Cheap polling: a stat() per poll, the safetensors header (read_manifest) only when mtime or size
changed, and a load only when the manifest's step is higher than the loaded one. A missing,
half-copied or unreadable file is skipped quietly and retried when it changes again; the trainer
replaces the file atomically, so a torn read cannot happen with our own writer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from deal_ros.storage.checkpoint import CheckpointError, read_manifest


@dataclass
class PollResult:
    step: int | None
    """Step to load now, or None (nothing new)."""
    note: str = ""
    """Why nothing is loaded, when worth a debug log (unreadable, older step)."""


class CheckpointPoller:
    """Tell the segmenter when a newer checkpoint is at `path`."""

    def __init__(self, path: str | Path, loaded_step: int = -1) -> None:
        self.path = Path(path)
        self.loaded_step = loaded_step
        self._signature: tuple[int, int] | None = None

    def poll(self) -> PollResult:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return PollResult(None, "no checkpoint yet")
        except OSError as exc:
            return PollResult(None, f"cannot stat checkpoint: {exc}")
        signature = (st.st_mtime_ns, st.st_size)
        if signature == self._signature:
            return PollResult(None)
        self._signature = signature
        try:
            manifest = read_manifest(self.path)
            step = int(manifest["step"])
        except (CheckpointError, KeyError, ValueError) as exc:
            return PollResult(None, f"checkpoint not readable yet ({exc}); will retry when it changes")
        if step <= self.loaded_step:
            return PollResult(None, f"checkpoint step {step} is not newer than the loaded step {self.loaded_step}")
        return PollResult(step)

    def mark_loaded(self, step: int) -> None:
        self.loaded_step = step

    def mark_failed(self) -> None:
        """The load failed (e.g. replaced while reading): retry on the next poll."""
        self._signature = None
