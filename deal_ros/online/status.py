"""Training and inference health as plain data: the status topic (JSON) and /diagnostics.

"Is it learning?" needs numbers a person can read: buffer fill, frames per class, steps/s,
losses (the DEAL term included), pseudo-label coverage, device and GPU memory, step time.
"""

from __future__ import annotations

import collections
import json
import math
import statistics
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from deal_ros.labels.class_groups import describe_group

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


MAX_STAMP_LATENCY_S = 600.0
"""A latency beyond this (or below -1 s) means the input stamps are not on the node's clock."""


def stamp_latency_s(now_s: float, stamp_s: float) -> float | None:
    """Input stamp to now on the node clock (sim time in replays); None when the stamp is not on this clock.

    Not clamped: under sim time /clock ticks (40 Hz from `ros2 bag play --clock`) can trail the stamps, so
    values down to -1 s are reported as measured.
    """
    latency = now_s - stamp_s
    if latency > MAX_STAMP_LATENCY_S or latency < -1.0:
        return None
    return latency


def clock_note(now_s: float, stamp_s: float) -> str:
    """Why latency_s is missing, in words (empty when the stamp is on the node's clock)."""
    if stamp_latency_s(now_s, stamp_s) is not None:
        return ""
    return (f"input stamps are {now_s - stamp_s:.0f} s from this node's clock (a bag played without --clock and "
            "use_sim_time, or unsynchronised clocks): latency_s is left out; receive_latency_s still holds")


class LatencyStats:
    """Recent per-frame times (s) of the segmenter: last, median and max over the last `window` frames."""

    KEYS = ("latency_s", "receive_latency_s", "wait_s", "inference_s", "processing_s")
    """latency_s: input stamp -> publish, node clock; receive_latency_s: receipt of the pair -> publish, steady
    clock; wait_s: in the latest-frame slot; inference_s: the network (swap + pre + forward + post);
    processing_s: decode to last publish."""

    def __init__(self, window: int = 100) -> None:
        self._values: dict[str, collections.deque[float]] = {
            key: collections.deque(maxlen=window) for key in self.KEYS}
        self._lock = threading.Lock()  # held for deque operations only: no deadline needed

    def add(self, **values: float | None) -> None:
        with self._lock:
            for key, value in values.items():
                if value is not None:
                    self._values[key].append(float(value))

    def summary(self) -> dict[str, dict[str, float] | None]:
        with self._lock:
            return {key: ({"last": round(v[-1], 4), "median": round(statistics.median(v), 4),
                           "max": round(max(v), 4)} if v else None) for key, v in self._values.items()}


def trainer_state(paused: bool, tags_known: bool, buffer_frames: int) -> str:
    """One word for what training does now: paused, waiting for tags / frames, or training."""
    if paused:
        return "paused"
    if not tags_known:
        return "waiting for tags"
    if buffer_frames == 0:
        return "waiting for frames"
    return "training"


def trainer_status(*, step: int, paused: bool, tags: Sequence[str], tags_known: bool, classes: Sequence[str],
                   buffer_frames: int, buffer_capacity: int, buffer_bytes: int, class_counts: Sequence[int],
                   steps_per_s: float, last: dict[str, Any] | None, device: str, device_type: str,
                   gpu_memory_mb: float | None, batch_size: int, keyframes_accepted: int, keyframes_rejected: int,
                   pairs: int, skipped_frames: int, sync_warning: str | None,
                   last_checkpoint: str, checkpoint_error: str, requested_device: str, depth_degenerate: int = 0,
                   steps_interrupted: int = 0, inference_yield_s: float = 0.0, trust: dict[str, Any] | None = None,
                   indistinct_classes: Sequence[Sequence[str]] = (), merge_indistinct: bool = False,
                   ) -> dict[str, Any]:
    """The trainer's status message (JSON-serialisable dict); `last` is StepStats.as_dict() or None.

    trust: TrustTracker.summary() (deal_ros.training.trust); its verdict is the top-level "masks_trusted", the one
    field a planner reads ("head_agreement" beside it: the smoothed agreement the verdict comes from).
    depth_degenerate: keyframes left out because their depth had no valid pixel or one constant value (they
    would teach DEAL "no edges"); steps_interrupted: steps abandoned between layers (pause, shutdown);
    inference_yield_s: seconds training stood aside for the in-process segmenter. indistinct_classes: the groups of
    classes tagged in exactly the same frames (OnlineTrainer.indistinct_classes()), merged into their first member
    with merge_indistinct (pseudo_label.merge_indistinct).
    """
    return {
        "node": "trainer",
        "state": trainer_state(paused, tags_known, buffer_frames),
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
        "depth_degenerate": depth_degenerate,
        "steps_interrupted": steps_interrupted,
        "inference_yield_s": round(inference_yield_s, 3),
        "pairs": pairs,
        "frames_skipped_invalid": skipped_frames,
        "sync_warning": sync_warning or "",
        "last_checkpoint": last_checkpoint,
        "checkpoint_error": checkpoint_error,
        "masks_trusted": bool(trust and trust["masks_trusted"]),
        "head_agreement": trust["head_agreement"] if trust else None,
        "trust": trust or {},
        "indistinct_classes": [list(group) for group in indistinct_classes],
        "indistinct_merged": bool(merge_indistinct),
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
    diffuse = last.get("diffuse_classes") or []
    cover = last.get("class_cover") or {}
    entries.append(DiagnosticEntry(
        WARN if diffuse else OK, "deal_ros: label quality",
        (f"pseudo-labels of {diffuse} cover most of the frames they are tagged in (class recognised from the "
         "whole frame)") if diffuse else "no class covers most of its frames",
        {f"cover_{name}": _fmt(value) for name, value in cover.items()}))
    entries.append(trust_diagnostic(status))
    entries.append(indistinct_diagnostic(status))
    fill = status["buffer"]
    empty_classes = [c for c, n in status["frames_per_class"].items() if n == 0]
    entries.append(DiagnosticEntry(
        WARN if empty_classes and fill["frames"] > 0 else OK, "deal_ros: buffer",
        f"{fill['frames']}/{fill['capacity']} frames" + (f"; no frames of {empty_classes}" if empty_classes else ""),
        {"frames_per_class": _fmt(status["frames_per_class"]), "mbytes": _fmt(fill["mbytes"]),
         "keyframes": _fmt(status["keyframes"]), "pairs": str(status["pairs"]),
         "tags": ",".join(status["tags"])}))
    dev_level = OK
    dev_message = status["device"]
    if status["device_type"] == "cpu":
        dev_level = ERROR if status["requested_device"].startswith("cuda") else WARN
        dev_message = f"running on CPU (requested '{status['requested_device']}'): training is slow"
    entries.append(DiagnosticEntry(dev_level, "deal_ros: device", dev_message, {
        "gpu_memory_mb": _fmt(status["gpu_memory_mb"]), "step_time_s": _fmt(last.get("step_time_s", math.nan))}))
    if status["sync_warning"]:
        entries.append(DiagnosticEntry(WARN, "deal_ros: input", status["sync_warning"]))
    elif status["depth_degenerate"]:
        entries.append(DiagnosticEntry(WARN, "deal_ros: input", (
            f"{status['pairs']} RGB-D pairs; {status['depth_degenerate']} keyframes left out for unusable depth (no "
            "valid pixel or one constant value)")))
    else:
        entries.append(DiagnosticEntry(OK, "deal_ros: input", f"{status['pairs']} RGB-D pairs"))
    if status["checkpoint_error"]:
        entries.append(DiagnosticEntry(ERROR, "deal_ros: checkpoint", status["checkpoint_error"],
                                       {"last_checkpoint": status["last_checkpoint"]}))
    else:
        entries.append(DiagnosticEntry(OK, "deal_ros: checkpoint", status["last_checkpoint"] or "none written yet"))
    return entries


def trust_message(trust: dict[str, Any]) -> str:
    """The trust verdict in one line, from TrustTracker.summary() (deal_ros.training.trust)."""
    agreement = trust.get("head_agreement")
    if trust.get("masks_trusted"):
        return f"masks trusted since step {trust.get('trusted_since_step')}: head agreement {agreement:.3f}"
    if agreement is None:
        return "masks not trusted yet: no pseudo-labels measured (segmentation head still warming up)"
    return (f"masks not trusted yet: head agreement {agreement:.3f} over {trust.get('steps_measured')} steps "
            f"(needs >= {trust.get('min_agreement')} over {trust.get('window_steps')} steps, "
            f"{trust.get('hold_steps')} in a row)")


def indistinct_diagnostic(status: dict[str, Any]) -> DiagnosticEntry:
    """'deal_ros: class groups': WARN naming each group of classes the tags cannot tell apart, OK without one."""
    groups = status.get("indistinct_classes") or []
    if not groups:
        return DiagnosticEntry(OK, "deal_ros: class groups", "the tags tell every pair of tagged classes apart")
    merged = bool(status.get("indistinct_merged"))
    return DiagnosticEntry(WARN, "deal_ros: class groups", "; ".join(describe_group(g, merged) for g in groups),
                           {f"group_{i}": ",".join(g) for i, g in enumerate(groups)})


def trust_diagnostic(status: dict[str, Any]) -> DiagnosticEntry:
    """'deal_ros: mask trust': OK once the masks are trusted, WARN before (with the agreement and the rule)."""
    trust = status.get("trust") or {}
    return DiagnosticEntry(OK if status.get("masks_trusted") else WARN, "deal_ros: mask trust", trust_message(trust),
                           {k: _fmt(v) for k, v in trust.items()})


def masks_for_planners(warming: bool, trusted: bool, while_warming_up: str, until_trusted: str) -> bool:
    """Whether deal/mask, deal/confidence and deal/points go out for this frame: not while warming up with
    mask.while_warming_up 'withhold', not before trust with mask.until_trusted 'withhold' (else flagged in
    deal/mask_info)."""
    if warming and while_warming_up == "withhold":
        return False
    return trusted or until_trusted != "withhold"


def warming_up(model_step: int, min_model_step: int) -> bool:
    """Masks from weights trained fewer than `min_model_step` steps are not for planners yet."""
    return model_step < min_model_step


def segmenter_status(*, model_step: int, min_model_step: int, withhold: bool, frames: int, masks_withheld: int,
                     dropped: int, times: dict[str, Any], fps: float, device: str, reload_error: str,
                     sync_warning: str | None, skipped_frames: int, tags: Sequence[str], trusted: bool,
                     withhold_until_trusted: bool, clock_note: str = "") -> dict[str, Any]:
    """The segmenter's status: model step, warm-up state and trust of the weights in use, throughput, latency and
    its parts (LatencyStats)."""
    warming = warming_up(model_step, min_model_step)
    return {
        "node": "segmenter",
        "state": "warming up" if warming else "ready",
        "model_step": model_step,
        "min_model_step": min_model_step,
        "masks_withheld_while_warming_up": withhold,
        "masks_trusted": trusted,
        "masks_withheld_until_trusted": withhold_until_trusted,
        "frames": frames,
        "masks_withheld": masks_withheld,
        "frames_dropped": dropped,
        **times,
        "clock_note": clock_note,
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
    latency = status.get("latency_s") or status.get("receive_latency_s")
    if latency:
        message += f", latency {latency['median']:.3f} s median"
    if status["state"] == "warming up":
        what = "masks withheld" if status["masks_withheld_while_warming_up"] else "masks NOT for planners"
        level, message = WARN, (f"warming up: model step {status['model_step']} < {status['min_model_step']} "
                                f"({what}); {message}")
    elif not status.get("masks_trusted", True):
        what = "masks withheld" if status.get("masks_withheld_until_trusted") else "masks marked untrusted"
        level, message = WARN, f"masks not trusted yet by the trainer ({what}); {message}"
    if status["sync_warning"]:
        level, message = WARN, status["sync_warning"]
    elif status["reload_error"]:
        level, message = WARN, status["reload_error"]
    return [DiagnosticEntry(level, "deal_ros: segmenter", message,
                            {k: _fmt(v) for k, v in status.items() if k not in ("sync_warning", "node")})]
