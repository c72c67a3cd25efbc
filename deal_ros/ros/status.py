"""Training and inference health as plain data: the status topic (JSON) and /diagnostics (pitfalls 7-8).

"Is it learning?" needs numbers a person can read: buffer fill, frames per class, steps/s,
losses (the DEAL term included), pseudo-label coverage, device and GPU memory, step time.
"""

from __future__ import annotations

import collections
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

OK, WARN, ERROR = 0, 1, 2
"""diagnostic_msgs/DiagnosticStatus levels."""


class RateMeter:
    """Events per second over a sliding window (steps/s, frames/s)."""

    def __init__(self, window_s: float = 10.0) -> None:
        self.window_s = window_s
        self._times: collections.deque[float] = collections.deque()

    def tick(self, now: float | None = None) -> None:
        self._times.append(time.monotonic() if now is None else now)

    def rate(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        if len(self._times) < 2:
            return 0.0
        span = max(now - self._times[0], 1e-9)
        return (len(self._times) - 1) / span if span > 0 else 0.0


class RateLimiter:
    """Wait time before the next step so that at most `max_per_s` happen per second (0 = no cap)."""

    def __init__(self, max_per_s: float = 0.0) -> None:
        self.max_per_s = max_per_s
        self._last: float | None = None

    def wait_s(self, now: float) -> float:
        if self.max_per_s <= 0 or self._last is None:
            return 0.0
        return max(0.0, self._last + 1.0 / self.max_per_s - now)

    def mark(self, now: float) -> None:
        self._last = now


@dataclass
class DiagnosticEntry:
    level: int
    name: str
    message: str
    values: dict[str, str] = field(default_factory=dict)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)


def trainer_status(*, step: int, paused: bool, tags: Sequence[str], tags_known: bool, classes: Sequence[str],
                   buffer_frames: int, buffer_capacity: int, buffer_bytes: int, class_counts: Sequence[int],
                   steps_per_s: float, last: dict[str, Any] | None, device: str, device_type: str,
                   gpu_memory_mb: float | None, batch_size: int, keyframes_accepted: int, keyframes_rejected: int,
                   pairs: int, frames_dropped: int, skipped_frames: int, sync_warning: str | None,
                   last_checkpoint: str, checkpoint_error: str, requested_device: str) -> dict[str, Any]:
    """The trainer's status message (JSON-serialisable dict); `last` is StepStats.as_dict() or None."""
    return {
        "node": "trainer",
        "step": step,
        "paused": paused,
        "tags": list(tags),
        "tags_known": tags_known,
        "buffer": {"frames": buffer_frames, "capacity": buffer_capacity,
                   "fill": round(buffer_frames / max(buffer_capacity, 1), 4),
                   "mbytes": round(buffer_bytes / 2**20, 2)},
        "frames_per_class": {name: int(c) for name, c in zip(classes, class_counts, strict=True)},
        "steps_per_s": round(steps_per_s, 3),
        "last_step": last,
        "device": device,
        "device_type": device_type,
        "requested_device": requested_device,
        "gpu_memory_mb": gpu_memory_mb,
        "batch_size": batch_size,
        "keyframes": {"accepted": keyframes_accepted, "rejected": keyframes_rejected},
        "pairs": pairs,
        "frames_dropped": frames_dropped,
        "frames_skipped_invalid": skipped_frames,
        "sync_warning": sync_warning or "",
        "last_checkpoint": last_checkpoint,
        "checkpoint_error": checkpoint_error,
    }


def trainer_diagnostics(status: dict[str, Any]) -> list[DiagnosticEntry]:
    """/diagnostics entries of the trainer: level and a one-line message people scan first."""
    entries = []
    last = status.get("last_step") or {}
    level, message = OK, f"step {status['step']}, {status['steps_per_s']:.2f} steps/s"
    if status["paused"]:
        level, message = OK, f"paused at step {status['step']}"
    elif not status["tags_known"]:
        level, message = WARN, "no tags yet: set parameter 'tags' or publish on the tags topic; not training"
    elif status["buffer"]["frames"] == 0:
        level, message = WARN, "no frames buffered yet (camera running? see the sync warning)"
    loss_values = {k: _fmt(v) for k, v in last.items()}
    entries.append(DiagnosticEntry(level, "deal_ros: training", message, {
        "step": str(status["step"]), "steps_per_s": _fmt(status["steps_per_s"]),
        "batch_size": str(status["batch_size"]), **loss_values}))
    fill = status["buffer"]
    empty_classes = [c for c, n in status["frames_per_class"].items() if n == 0]
    entries.append(DiagnosticEntry(
        WARN if empty_classes and fill["frames"] > 0 else OK, "deal_ros: buffer",
        f"{fill['frames']}/{fill['capacity']} frames" + (f"; no frames of {empty_classes}" if empty_classes else ""),
        {"frames_per_class": _fmt(status["frames_per_class"]), "mbytes": _fmt(fill["mbytes"]),
         "keyframes": _fmt(status["keyframes"]), "pairs": str(status["pairs"]),
         "frames_dropped": str(status["frames_dropped"]), "tags": ",".join(status["tags"])}))
    dev_level = OK
    dev_message = status["device"]
    if status["device_type"] == "cpu":
        dev_level = ERROR if status["requested_device"].startswith("cuda") else WARN
        dev_message = f"running on CPU (requested '{status['requested_device']}'): training is slow"
    entries.append(DiagnosticEntry(dev_level, "deal_ros: device", dev_message, {
        "gpu_memory_mb": _fmt(status["gpu_memory_mb"]), "step_time_s": _fmt(last.get("step_time_s", math.nan))}))
    if status["sync_warning"]:
        entries.append(DiagnosticEntry(WARN, "deal_ros: input", status["sync_warning"]))
    else:
        entries.append(DiagnosticEntry(OK, "deal_ros: input", f"{status['pairs']} RGB-D pairs"))
    if status["checkpoint_error"]:
        entries.append(DiagnosticEntry(ERROR, "deal_ros: checkpoint", status["checkpoint_error"],
                                       {"last_checkpoint": status["last_checkpoint"]}))
    else:
        entries.append(DiagnosticEntry(OK, "deal_ros: checkpoint", status["last_checkpoint"] or "none written yet"))
    return entries


def segmenter_status(*, model_step: int, frames: int, dropped: int, frame_age_s: float | None, wait_s: float | None,
                     inference_s: float | None, fps: float, device: str, reload_error: str,
                     sync_warning: str | None, skipped_frames: int, tags: Sequence[str]) -> dict[str, Any]:
    """The segmenter's status: model step, throughput, and the age of the frame last processed."""
    return {
        "node": "segmenter",
        "model_step": model_step,
        "frames": frames,
        "frames_dropped": dropped,
        "frame_age_s": frame_age_s,
        "queue_wait_s": wait_s,
        "inference_s": inference_s,
        "fps": round(fps, 3),
        "device": device,
        "reload_error": reload_error,
        "sync_warning": sync_warning or "",
        "frames_skipped_invalid": skipped_frames,
        "tags": list(tags),
    }


def segmenter_diagnostics(status: dict[str, Any]) -> list[DiagnosticEntry]:
    level = OK
    message = f"{status['fps']:.1f} fps, model step {status['model_step']}"
    if status["sync_warning"]:
        level, message = WARN, status["sync_warning"]
    elif status["reload_error"]:
        level, message = WARN, status["reload_error"]
    return [DiagnosticEntry(level, "deal_ros: segmenter", message,
                            {k: _fmt(v) for k, v in status.items() if k not in ("sync_warning", "node")})]
