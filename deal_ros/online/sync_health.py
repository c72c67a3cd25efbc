"""Why the RGB-D synchroniser is silent, in words (a silent synchroniser is what users of RGB-D nodes meet first).

message_filters never says why it does not fire. The watchdog records when each input was last
seen (arrival time and header stamp) and how many publishers each topic has, and after
`timeout_s` without a pair it names the likely cause: no publisher (topic name), publishers but
no messages (QoS mismatch), or messages on both with stamps further apart than the slop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass
class _Input:
    topic: str
    last_seen: float | None = None
    last_stamp: float | None = None
    count: int = 0
    publishers: int = -1
    """-1 = unknown."""
    other_types: tuple[str, ...] = ()
    """Message types of publishers on the topic that are not the type we subscribe (e.g. CompressedImage)."""


def _wrong_type(name: str, e: _Input) -> str:
    return (f"{name} topic '{e.topic}' is published as {', '.join(e.other_types)}, not sensor_msgs/msg/Image: "
            "remap to the raw image topic (or republish it with image_transport)")


class SyncWatchdog:
    """Feed it arrivals and pairs (clock: any monotonic seconds); `check` returns a warning or None."""

    def __init__(self, inputs: Sequence[tuple[str, str]], timeout_s: float = 5.0, slop_s: float = 0.05,
                 qos_text: str = "best_effort") -> None:
        self.inputs = {name: _Input(topic) for name, topic in inputs}
        self.timeout_s = timeout_s
        self.slop_s = slop_s
        self.qos_text = qos_text
        self.started: float | None = None
        self.last_pair: float | None = None
        self.pairs = 0
        self._last_warning: float | None = None

    def start(self, now: float) -> None:
        self.started = now

    def note_input(self, name: str, now: float, stamp_s: float) -> None:
        entry = self.inputs[name]
        entry.last_seen, entry.last_stamp = now, stamp_s
        entry.count += 1

    def note_publishers(self, name: str, count: int, other_types: tuple[str, ...] = ()) -> None:
        """count: publishers of our message type; other_types: types of the topic's other publishers."""
        entry = self.inputs[name]
        entry.publishers, entry.other_types = count, other_types

    def wrong_types(self) -> list[str]:
        """One line per input topic that also carries another message type (never received: DDS drops it)."""
        return [_wrong_type(name, e) for name, e in self.inputs.items() if e.other_types]

    def note_pair(self, now: float) -> None:
        self.last_pair = now
        self.pairs += 1

    def stale_for(self, now: float) -> float:
        """Seconds since the last pair (or since start)."""
        ref = self.last_pair if self.last_pair is not None else self.started
        return 0.0 if ref is None else now - ref

    def check(self, now: float) -> str | None:
        """A warning when no pair arrived for timeout_s; at most one per timeout_s; None when healthy."""
        if self.started is None:
            self.start(now)
        if self.stale_for(now) < self.timeout_s:
            return None
        if self._last_warning is not None and now - self._last_warning < self.timeout_s:
            return None
        if all(e.publishers == 0 and e.count == 0 and not e.other_types for e in self.inputs.values()):
            return None  # nothing to synchronise: the camera is simply not running (reported in status)
        self._last_warning = now
        return self.describe(now)

    def describe(self, now: float) -> str:
        stale = self.stale_for(now)
        lines = [f"no synchronised RGB-D pair for {stale:.1f} s"]
        seen = []
        for name, e in self.inputs.items():
            pubs = "unknown" if e.publishers < 0 else str(e.publishers)
            when = "never" if e.last_seen is None else f"{now - e.last_seen:.1f} s ago (stamp {e.last_stamp:.3f})"
            seen.append(f"{name} '{e.topic}': last message {when}, {e.count} received, {pubs} publisher(s)")
        lines.append("; ".join(seen))
        lines.append("likely cause: " + self.likely_cause(now))
        return " | ".join(lines)

    def likely_cause(self, now: float) -> str:
        silent = [(n, e) for n, e in self.inputs.items()
                  if e.last_seen is None or now - e.last_seen > self.timeout_s]
        for name, e in silent:
            if e.publishers == 0 and e.other_types:
                return _wrong_type(name, e)
            if e.publishers == 0:
                return (f"no publisher on {name} topic '{e.topic}': check the topic name / remapping "
                        "(ros2 topic list)")
        for name, e in silent:
            if e.publishers > 0 and self.qos_text.startswith("reliable"):
                return (f"{name} topic '{e.topic}' has {e.publishers} publisher(s) but nothing arrives: QoS "
                        f"mismatch (we subscribe {self.qos_text}; a reliable subscriber never hears a best_effort "
                        f"camera: set qos_overrides.{e.topic}.subscription.reliability: best_effort) or a "
                        "network/DDS problem")
            if e.publishers > 0:
                return (f"{name} topic '{e.topic}' has {e.publishers} publisher(s) but nothing arrives: the publisher "
                        f"is silent (driver stalled, stream disabled) or a QoS/network problem (we subscribe "
                        f"{self.qos_text}; check `ros2 topic info -v {e.topic}`)")
        if silent:
            return f"{silent[0][0]} stopped arriving"
        stamps = [e.last_stamp for e in self.inputs.values() if e.last_stamp is not None]
        if len(stamps) == len(self.inputs):
            spread = max(stamps) - min(stamps)
            if spread > self.slop_s:
                return (f"both inputs arrive but their stamps differ by {spread:.3f} s > sync.slop {self.slop_s} s: "
                        "unaligned stamps (different clocks, use_sim_time without --clock) or very different "
                        "frame rates; align the camera streams or raise sync.slop")
        return (f"both inputs arrive with close stamps but never pair: frame rates too different for "
                f"sync.queue_size, or depth not from the same camera (slop {self.slop_s} s)")
