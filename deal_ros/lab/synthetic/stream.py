"""A scripted close-up camera stream with ground truth: what a robot sees while someone shows it objects.

Why: `deal-ros bench live` asks how good the live masks are N seconds after the objects came into view, which
needs a long stream whose frames change smoothly (the keyframe gate's motion rule must see motion, as it does
on a robot), whose tags change when the objects change, and whose every frame has ground truth. The stream is a
sequence of segments (SEGMENT_S apart, 30-60 s by default): each shows a new object set (each class alone first,
then pairs, in a shuffled order) on a new close-up table, and the camera orbits the objects along a smooth
periodic path (azimuth, elevation and distance change together; the path repeats every PATH_PERIOD_S).

Rendering costs ~60 ms a pose on one core, too slow to keep up with a camera, so the stream is rendered before
it is played: at most `poses_per_s` distinct poses a second of the periodic path (frames in between hold the
pose, as a camera faster than the robot's motion would see it), `variants` sensor-noise draws of each (frame
i takes draw i % variants), everything held in memory (~1.3 GB for the default 300 s at 240x320).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from deal_ros.frames.tags import TagRange
from deal_ros.io.bag.frames import RGBDFrame
from deal_ros.lab.synthetic.frame import SURFACE_OBJECT0
from deal_ros.lab.synthetic.makers import CLOSEUP_COVERAGE, CLOSEUP_DISTANCE_M, CLOSEUP_STYLES, MIN_IMAGE_SIDE
from deal_ros.lab.synthetic.render import camera_rays, render_frame, render_geometry, render_room
from deal_ros.lab.synthetic.scene import Scene, SceneObject, _look_at
from deal_ros.lab.synthetic.sensor import depth_sensor
from deal_ros.lab.synthetic.shading import shade_rgb

SEGMENT_S = (30.0, 60.0)
"""Range of a segment's length (s): how long one object set stays in view."""
PATH_PERIOD_S = 15.0
"""The camera path repeats after this long (s)."""
AZIMUTH_SWING_RAD = math.radians(40.0)
"""Half the azimuth sweep of the orbit around the objects."""
ELEVATION_SWING_RAD = math.radians(6.0)
DISTANCE_SWING = 0.1
"""Relative change of the camera's distance to the objects."""
LOOK_SWING_M = 0.1
"""How far (m) the point the camera looks at strays from the objects' centre: they move across the image."""
BASE_STAMP_NS = 1_700_000_000 * 10**9
FRAME_ID = "camera_color_optical_frame"


@dataclass
class _Pose:
    gt: np.ndarray
    """(H, W) uint8 class ids."""
    rgb: list[np.ndarray]
    """(H, W, 3) uint8, one per noise draw."""
    depth_m: list[np.ndarray]
    """(H, W) float32 metres, 0 = hole, one per noise draw."""


@dataclass
class _SegmentScene:
    scene: Scene
    objects: list[SceneObject]
    centre: np.ndarray
    """(3,) world point the camera orbits (the objects' footprint centroid on the table)."""
    distance_m: float
    azimuth: float
    elevation: float
    roll: float
    phases: tuple[float, float, float]
    blur_sigma: float
    rgb_noise: float
    texture_seed: int


def object_sets(classes: Sequence[str], rng: np.random.Generator) -> Iterator[tuple[str, ...]]:
    """Each class alone, then every pair, in a shuffled order (classes in list order within a set); repeats."""
    singles = [(c,) for c in classes]
    pairs = [(a, b) for i, a in enumerate(classes) for b in classes[i + 1:]]
    while True:
        for group in (singles, pairs):
            for index in rng.permutation(len(group)):
                yield group[index]


class CloseupStream:
    """The rendered stream: `frames()` in time order (RGBDFrame, as a bag reader yields them), `gt(index)`.

    seconds of stream at camera_hz; frame i is stamped BASE_STAMP_NS + i / camera_hz.
    """

    def __init__(self, seconds: float, camera_hz: float = 10.0, height: int = 240, width: int = 320,
                 classes: Sequence[str] = ("mug", "box", "ball"), seed: int = 0,
                 segment_s: tuple[float, float] = SEGMENT_S, poses_per_s: float = 10.0, variants: int = 2) -> None:
        if not seconds > 0 or not camera_hz > 0 or not poses_per_s > 0:
            raise ValueError("seconds, camera_hz and poses_per_s must be > 0")
        if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
            raise ValueError(f"image too small: {height}x{width}")
        if not classes or variants < 1 or not 0 < segment_s[0] <= segment_s[1]:
            raise ValueError("need classes, variants >= 1 and 0 < segment_s[0] <= segment_s[1]")
        self.classes = list(classes)
        self.camera_hz = camera_hz
        self.height, self.width = height, width
        self.num_frames = max(1, round(seconds * camera_hz))
        self.seed = seed
        self.variants = variants
        self.poses_per_s = min(poses_per_s, camera_hz)
        self.slots = max(1, round(PATH_PERIOD_S * self.poses_per_s))
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7]))
        sets = object_sets(self.classes, rng)
        self.segments: list[TagRange] = []  # one object set in view each, in stream seconds
        start = 0.0
        while start < self.num_frames / camera_hz:
            end = start + float(rng.uniform(*segment_s))
            self.segments.append(TagRange(start, end, next(sets)))
            start = end
        self._scenes: dict[int, _SegmentScene] = {}
        self._poses: dict[tuple[int, int], _Pose] = {}
        for index in range(self.num_frames):
            self._pose(index)  # everything rendered now: playing must keep up with the camera

    # -- where frame i is --------------------------------------------------------------------------------
    def time_s(self, index: int) -> float:
        return index / self.camera_hz

    def segment_of(self, index: int) -> int:
        t = self.time_s(index)
        return next(i for i, s in enumerate(self.segments) if s.start_s <= t < s.end_s)

    def _slot(self, index: int, segment: int) -> int:
        t = self.time_s(index) - self.segments[segment].start_s
        return math.floor(t * self.poses_per_s + 1e-9) % self.slots

    # -- what frame i shows ------------------------------------------------------------------------------
    def frames(self) -> Iterator[RGBDFrame]:
        """Every frame in time order; its arrays are the stream's own (read-only use)."""
        for index in range(self.num_frames):
            pose = self._pose(index)
            segment = self.segments[self.segment_of(index)]
            scene = self._scenes[self.segment_of(index)].scene
            stamp = BASE_STAMP_NS + round(index * 1e9 / self.camera_hz)
            draw = index % self.variants
            yield RGBDFrame(stamp, pose.rgb[draw], pose.depth_m[draw], list(segment.tags), FRAME_ID, scene.k.copy(),
                            index, stamp)

    def gt(self, index: int) -> np.ndarray:
        """(H, W) uint8 ground truth of frame `index` (0 = background, k = classes[k-1])."""
        return self._pose(index).gt

    def _pose(self, index: int) -> _Pose:
        segment = self.segment_of(index)
        key = (segment, self._slot(index, segment))
        pose = self._poses.get(key)
        if pose is None:
            pose = self._poses[key] = self._render(segment, key[1])
        return pose

    def _segment_scene(self, segment: int) -> _SegmentScene:
        built = self._scenes.get(segment)
        if built is not None:
            return built
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, 8, segment]))
        labels = [self.classes.index(tag) + 1 for tag in self.segments[segment].tags]
        scene, objects, *_ = render_frame(rng, labels, self.height, self.width, len(self.classes),
                                          CLOSEUP_DISTANCE_M, CLOSEUP_STYLES, CLOSEUP_COVERAGE)
        if objects:
            centre = np.mean([o.parts[0].bound()[0] for o in objects], axis=0) * np.array([1.0, 1.0, 0.0])
        else:
            centre = np.zeros(3)
        offset = scene.cam - centre
        distance = float(np.linalg.norm(offset))
        phases = rng.uniform(0, 2 * math.pi, 3)
        built = _SegmentScene(
            scene, objects, centre, distance, math.atan2(offset[1], offset[0]), math.asin(offset[2] / distance),
            float(rng.uniform(-0.05, 0.05)), (float(phases[0]), float(phases[1]), float(phases[2])),
            float(rng.uniform(0.5, 0.9)), float(rng.uniform(1.5, 3.5)), int(rng.integers(2**31)))
        self._scenes[segment] = built
        return built

    def _camera(self, built: _SegmentScene, slot: int) -> Scene:
        """The segment's scene seen from the path's pose at `slot`."""
        theta = 2 * math.pi * slot / self.slots
        az = built.azimuth + AZIMUTH_SWING_RAD * math.sin(theta + built.phases[0])
        el = min(max(built.elevation + ELEVATION_SWING_RAD * math.sin(2 * theta + built.phases[1]), 0.4), 1.2)
        dist = built.distance_m * (1.0 + DISTANCE_SWING * math.sin(3 * theta + built.phases[2]))
        cam = built.centre + dist * np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
        look = built.centre + LOOK_SWING_M * np.array([math.sin(2 * theta + built.phases[2]),
                                                        math.sin(3 * theta + built.phases[0]), 0.0])
        return dataclasses.replace(built.scene, cam=cam, rot=_look_at(cam, look, built.roll))

    def _render(self, segment: int, slot: int) -> _Pose:
        built = self._segment_scene(segment)
        height, width = self.height, self.width
        scene = self._camera(built, slot)
        dirs = camera_rays(scene, height, width)
        t, surf, is_wall = render_geometry(render_room(scene, dirs), scene, built.objects, dirs, height, width)
        # the same texture draws in every pose: the objects and the table look the same from everywhere
        rgb_lin = shade_rgb(np.random.default_rng(built.texture_seed), scene, built.objects, dirs, t, surf, is_wall)
        clean = np.asarray(cv2.GaussianBlur(rgb_lin.reshape(height, width, 3).astype(np.float32), (0, 0),
                                            built.blur_sigma), np.float32) * 255.0
        z = t.reshape(height, width)
        surface = surf.reshape(height, width)
        lut = np.zeros(256, np.uint8)
        for j, obj in enumerate(built.objects):
            lut[SURFACE_OBJECT0 + j] = obj.label
        pose = _Pose(lut[surface], [], [])
        for draw in range(self.variants):
            rng = np.random.default_rng(np.random.SeedSequence([self.seed, 9, segment, slot, draw]))
            noisy = clean + built.rgb_noise * rng.standard_normal(clean.shape, dtype=np.float32)
            pose.rgb.append(np.clip(np.round(noisy), 0, 255).astype(np.uint8))
            grid = rng.random((max(height // 3, 2), max(width // 3, 2))).astype(np.float32)
            pose.depth_m.append(depth_sensor(rng, z, surface, float(scene.k[0, 0]), grid))
        return pose
