"""Classes that the tags cannot tell apart: tagged in exactly the same frames.

A robot's data is often one scene seen for many frames, its objects fixed. Two classes that every frame seen so
far tags both or neither are indistinguishable to anything trained on tags: swapping their names explains every
tag equally well, so which of the two objects a CAM calls "mug" is decided by chance (initial weights, batch
order), not by the data. Rather than guess, the labels can say so: TagContrast finds such groups from the
distinct tag patterns seen, and merge_class_scores labels each group as its first member (the caller warns with
describe_group, naming the classes). Light (numpy only, torch tensors taken as they come): the status and
diagnostics of the nodes use it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch


class TagContrast:
    """The distinct tag patterns seen so far, and the classes they cannot tell apart.

    Cheap for many frames: only distinct patterns are kept (a fixed scene has one or a handful), as bytes.
    Thread-safe: frames may be added in one thread while another asks for the groups.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self._lock = threading.Lock()
        self._patterns: set[bytes] = set()
        self._version = 0
        """Counts changes of _patterns: groups computed from an older set are not cached."""
        self._groups: list[tuple[int, ...]] | None = []

    def clear(self) -> None:
        """Forget every pattern (the frames they came from are gone)."""
        with self._lock:
            self._patterns = set()
            self._version += 1
            self._groups = []

    def update(self, tags: np.ndarray | torch.Tensor | Sequence[Any]) -> None:
        """Add one frame's tags (K,) or a batch's (B, K), 0/1 (anything > 0 counts as tagged)."""
        rows = _to_numpy(tags)
        if rows.ndim == 1:
            rows = rows[None]
        if rows.ndim != 2 or rows.shape[1] != self.num_classes:
            raise ValueError(f"tags must be (K,) or (B, K) with K = {self.num_classes}, got shape {rows.shape}")
        new = {bytes(row) for row in (rows > 0).astype(np.uint8)}
        with self._lock:
            if not new <= self._patterns:
                self._patterns = self._patterns | new
                self._version += 1
                self._groups = None

    def presence(self) -> np.ndarray:
        """(P, K) bool: which classes each distinct pattern seen tags (patterns sorted, so the result is stable)."""
        return self._presence()[0]

    def _presence(self) -> tuple[np.ndarray, int]:
        with self._lock:
            patterns, version = sorted(self._patterns), self._version
        if not patterns:
            return np.zeros((0, self.num_classes), bool), version
        return np.stack([np.frombuffer(p, np.uint8) for p in patterns]).astype(bool), version

    def groups(self) -> list[tuple[int, ...]]:
        """Classes (0-based, tagged at least once) with identical presence over every frame seen; groups of two or
        more only, each in class order, sorted by first member."""
        with self._lock:
            cached = self._groups
        if cached is not None:
            return list(cached)
        presence, version = self._presence()
        by_column: dict[bytes, list[int]] = {}
        for k in range(self.num_classes):
            column = presence[:, k]
            if column.any():
                by_column.setdefault(column.tobytes(), []).append(k)
        groups = sorted(tuple(members) for members in by_column.values() if len(members) >= 2)
        with self._lock:
            if self._version == version:  # no pattern added meanwhile
                self._groups = groups
        return list(groups)

    def representatives(self) -> np.ndarray:
        """(K,) int64: each group member -> its group's first member, every other class -> itself."""
        reps = np.arange(self.num_classes, dtype=np.int64)
        for group in self.groups():
            reps[list(group)] = group[0]
        return reps

    def merge_map(self) -> np.ndarray | None:
        """representatives() when there is a group to merge, else None: the (K,) int64 map make_pseudo_labels takes
        (with pseudo_label.merge_indistinct), for the trainer, the segmenter and `deal-ros label`."""
        return self.representatives() if self.groups() else None

    def state(self) -> dict[str, Any]:
        """JSON-serialisable state (a checkpoint's extra['class_contrast']): the distinct patterns as 0/1 strings."""
        return {"num_classes": self.num_classes,
                "patterns": ["".join("1" if v else "0" for v in row) for row in self.presence()]}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> TagContrast:
        """Inverse of state(); raises ValueError on a state that does not fit."""
        contrast = cls(int(state["num_classes"]))
        for pattern in state.get("patterns", []):
            if len(pattern) != contrast.num_classes or set(pattern) - {"0", "1"}:
                raise ValueError(f"tag pattern {pattern!r} is not {contrast.num_classes} digits 0/1")
            contrast.update(np.array([int(c) for c in pattern], np.uint8))
        return contrast


def _to_numpy(values: Any) -> np.ndarray:
    """A numpy array of an array, a list or a torch tensor (on any device) without importing torch."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    return np.asarray(values)


def contrast_from_extra(extra: dict[str, Any], num_classes: int) -> TagContrast:
    """The TagContrast saved in a checkpoint's extra['class_contrast'] (an empty one for checkpoints without it);
    ValueError when it does not fit num_classes or is damaged."""
    state = extra.get("class_contrast")
    if state is None:
        return TagContrast(num_classes)
    try:
        contrast = TagContrast.from_state(state)
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"damaged class_contrast ({exc})") from None
    if contrast.num_classes != num_classes:
        raise ValueError(f"class_contrast is for {contrast.num_classes} classes, not {num_classes}")
    return contrast


def groups_of(representatives: np.ndarray) -> list[tuple[int, ...]]:
    """The groups (of two or more classes, as TagContrast.groups()) that representatives (K,) stand for."""
    reps = np.asarray(representatives, np.int64)
    members = (tuple(np.flatnonzero(reps == first).tolist()) for first in np.unique(reps))
    return sorted(group for group in members if len(group) >= 2)


def merge_class_scores(scores: torch.Tensor, tags: torch.Tensor, representatives: torch.Tensor | np.ndarray,
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """scores (B, K, H, W), tags (B, K), representatives (K,) as TagContrast.representatives() -> (scores, tags)
    of the same shapes: each group's max score goes to its first member's channel, the other members' scores and
    tags become 0 (every class that is its own representative is unchanged)."""
    reps = _to_numpy(representatives).astype(np.int64)
    if reps.shape != (scores.shape[1],):
        raise ValueError(f"representatives must be ({scores.shape[1]},), got {reps.shape}")
    merged, merged_tags = scores.clone(), tags.clone()
    for first in np.unique(reps):
        members = np.flatnonzero(reps == first).tolist()
        others = [k for k in members if k != first]
        if not others:
            continue
        merged[:, first] = scores[:, members].amax(dim=1)
        merged_tags[:, first] = tags[:, members].amax(dim=1)
        merged[:, others] = 0
        merged_tags[:, others] = 0
    return merged, merged_tags


def describe_group(names: Sequence[str], merged: bool) -> str:
    """One warning line for a group of indistinct classes (names in class order)."""
    how = (f"labelled as {names[0]}" if merged
           else f"split at random; pseudo_label.merge_indistinct labels them as {names[0]}")
    return (f"classes {', '.join(names)} were tagged in exactly the same frames: tags cannot tell them apart "
            f"({how})")
