"""The public makers: class lists and their shape/texture styles, and the frame loop that deals classes,
renders, shades, blurs and adds sensor noise."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np

from deal_ros.lab.synthetic.families import LAYOUTS, render_family_frame
from deal_ros.lab.synthetic.frame import SURFACE_BACKGROUND, SURFACE_OBJECT0, SURFACE_TABLE, SyntheticFrame
from deal_ros.lab.synthetic.render import render_frame
from deal_ros.lab.synthetic.scene import Scene, SceneObject
from deal_ros.lab.synthetic.sensor import depth_sensor
from deal_ros.lab.synthetic.shading import shade_rgb

DEFAULT_CLASSES: tuple[str, ...] = ("mug", "box", "ball")
"""Default object classes; class k (1-based) is rendered as shape/texture k-1 modulo 3."""
CLOSEUP_CLASSES: tuple[str, ...] = ("mug", "box", "ball", "can", "tile", "ring", "bottle", "block")
"""Classes of the close-up preset; class k (1-based) gets shape and texture CLOSEUP_STYLES[k-1] (modulo 8).
Textured (stripes, checks, spots) and untextured ('plain') objects, flat ones (tile, ring) and tall ones."""

MIN_IMAGE_SIDE = 16
"""Smallest height and width of a generated scene (a scene needs room for its objects and their edges)."""

_Rendered = tuple[Scene, list[SceneObject], np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""What a frame's renderer returns: scene, objects, ray directions, depth t, surface ids, is-wall flags."""
_TABLETOP_STYLES = (("mug", "stripes"), ("box", "checks"), ("ball", "spots"))
CLOSEUP_STYLES = (("mug", "stripes"), ("box", "checks"), ("ball", "spots"), ("can", "plain"), ("tile", "plain"),
                  ("ring", "stripes"), ("bottle", "spots"), ("block", "plain"))
"""(shape, texture) of close-up class k at index k-1 (modulo 8)."""
CLOSEUP_DISTANCE_M = (0.35, 0.6)
"""Camera distance of the close-ups along the optical axis to the table (m)."""
CLOSEUP_COVERAGE = (0.08, 0.35)
"""Fraction of the image the close-ups' objects cover together."""


def make_tabletop_scenes(
    num_frames: int,
    height: int = 240,
    width: int = 320,
    classes: Sequence[str] = DEFAULT_CLASSES,
    seed: int = 0,
    objects_per_frame: tuple[int, int] = (1, 3),
    camera_distance_m: tuple[float, float] = (0.5, 1.2),
) -> list[SyntheticFrame]:
    """Render `num_frames` RGB-D tabletop frames (deterministic per seed; frame i is the same for
    any num_frames > i). Classes are dealt from shuffled decks so each occurs about equally often;
    each frame holds objects_per_frame[0]..[1] objects (the same class may appear twice); the camera is
    camera_distance_m[0]..[1] metres from the table along its optical axis."""
    def render(rng: np.random.Generator, labels: list[int]) -> _Rendered:
        return render_frame(rng, labels, height, width, len(classes), camera_distance_m, _TABLETOP_STYLES, None)

    return _make_scenes(num_frames, height, width, classes, seed, objects_per_frame, render)


def make_closeup_scenes(
    num_frames: int,
    height: int = 240,
    width: int = 320,
    classes: Sequence[str] = CLOSEUP_CLASSES,
    seed: int = 0,
    objects_per_frame: tuple[int, int] = (1, 2),
    coverage: tuple[float, float] = CLOSEUP_COVERAGE,
) -> list[SyntheticFrame]:
    """Close-up "onboarding" frames: one or two objects that together cover coverage[0]..[1] of the image,
    seen from 0.35-0.6 m, the table's far edge and the floor often in view, stereo shadows on the objects'
    far side. Eight object styles (CLOSEUP_CLASSES; class k uses style k-1 modulo 8), textured and plain.
    Deterministic per seed and prefix-stable like make_tabletop_scenes; use different seeds for training
    and held-out sets."""
    def render(rng: np.random.Generator, labels: list[int]) -> _Rendered:
        return render_frame(rng, labels, height, width, len(classes), CLOSEUP_DISTANCE_M, CLOSEUP_STYLES, coverage)

    return _make_scenes(num_frames, height, width, classes, seed, objects_per_frame, render)


FAMILIES: tuple[str, ...] = ("closeup", "tabletop", *LAYOUTS)
"""Scene families of make_family_scenes (`deal-ros bench quality --scenes`)."""


def make_family_scenes(
    family: str,
    num_frames: int,
    height: int = 240,
    width: int = 320,
    classes: Sequence[str] = CLOSEUP_CLASSES,
    seed: int = 0,
) -> list[SyntheticFrame]:
    """Frames of one family (FAMILIES): 'closeup' and 'tabletop' are make_closeup_scenes / make_tabletop_scenes
    with their defaults; 'clutter' (2-5 small objects of 0.5-3 % of the frame each, mostly in contact, on a table),
    'bin' (2-5 touching objects in a tray or box with vertical or slanted walls), 'shelf' (a shelf cell from the
    front, objects hidden in part by each other and by the cell's front lip) and 'no_plane' (1-3 objects held in
    front of furniture, or on a cloth in folds) use the close-ups' objects and styles (class k: style k-1 modulo 8).
    Tray, shelf, cloth and furniture are background in the ground truth. Deterministic per seed, prefix-stable."""
    if family == "closeup":
        return make_closeup_scenes(num_frames, height, width, classes, seed)
    if family == "tabletop":
        return make_tabletop_scenes(num_frames, height, width, classes, seed)
    if family not in LAYOUTS:
        raise ValueError(f"unknown scene family {family!r}; known: {', '.join(FAMILIES)}")
    layout = LAYOUTS[family]

    def render(rng: np.random.Generator, labels: list[int]) -> _Rendered:
        return render_family_frame(rng, labels, height, width, len(classes), CLOSEUP_STYLES, layout)

    per_frame = (1, 3) if family == "no_plane" else (2, 5)
    return _make_scenes(num_frames, height, width, classes, seed, per_frame, render)



def _make_scenes(
    num_frames: int,
    height: int,
    width: int,
    classes: Sequence[str],
    seed: int,
    objects_per_frame: tuple[int, int],
    render: Callable[[np.random.Generator, list[int]], _Rendered],
) -> list[SyntheticFrame]:
    if num_frames < 0:
        raise ValueError(f"num_frames must be >= 0, got {num_frames}")
    if not classes:
        raise ValueError("classes must not be empty")
    if len(classes) > 254:
        raise ValueError("at most 254 classes fit a uint8 mask")
    lo, hi = objects_per_frame
    if not 0 <= lo <= hi:
        raise ValueError(f"objects_per_frame must satisfy 0 <= lo <= hi, got {objects_per_frame}")
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise ValueError(f"image too small: {height}x{width}")
    num_classes = len(classes)
    deck_rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    deck: list[int] = []
    frames: list[SyntheticFrame] = []
    for i in range(num_frames):
        n = int(deck_rng.integers(lo, hi + 1))
        labels = []
        for _ in range(n):
            if not deck:
                deck = [int(c) + 1 for c in deck_rng.permutation(num_classes)]
            labels.append(deck.pop())
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, i]))
        scene, objects, dirs, t, surf, is_wall = render(rng, labels)

        rgb_lin = shade_rgb(rng, scene, objects, dirs, t, surf, is_wall)
        rgb = rgb_lin.reshape(height, width, 3).astype(np.float32)
        rgb = np.asarray(cv2.GaussianBlur(rgb, (0, 0), rng.uniform(0.5, 0.9)), np.float32)  # float32 already
        rgb = rgb * 255.0 + rng.uniform(1.5, 3.5) * rng.standard_normal(rgb.shape, dtype=np.float32)
        rgb8 = np.clip(np.round(rgb), 0, 255).astype(np.uint8)

        z = t.reshape(height, width)
        surf2 = surf.reshape(height, width)
        grid = rng.random((max(height // 3, 2), max(width // 3, 2))).astype(np.float32)
        depth = depth_sensor(rng, z, surf2, float(scene.k[0, 0]), grid)

        lut = np.zeros(256, np.uint8)
        for j, obj in enumerate(objects):
            lut[SURFACE_OBJECT0 + j] = obj.label
        gt = lut[surf2]
        present = set(np.unique(gt).tolist()) - {0}
        tags = [classes[c - 1] for c in range(1, num_classes + 1) if c in present]
        frames.append(
            SyntheticFrame(
                rgb=rgb8,
                depth_m=depth,
                gt_mask=gt,
                tags=tags,
                intrinsics=scene.k.copy(),
                depth_true_m=z.astype(np.float32),
                surface=surf2,
                table_edge_visible=bool(
                    ((surf2[:-1] == SURFACE_BACKGROUND) & (surf2[1:] == SURFACE_TABLE)).any()
                ),
                object_classes=[o.label for o in objects],
            )
        )
    return frames
