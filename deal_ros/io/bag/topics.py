"""Which topics of a bag are colour, depth, camera_info and tags: driver profiles, then name heuristics.

Works on ``{topic: msgtype}`` alone, so a choice can be made (and tested) without opening a bag.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from deal_ros.io.bag.errors import BagError

__all__ = [
    "CAMERA_INFO",
    "COMPRESSED",
    "IMAGE",
    "IMAGE_TYPES",
    "PROFILES",
    "STRING",
    "TAG_TOPICS",
    "CameraProfile",
    "TopicChoice",
    "find_tags_topic",
    "require_topic",
    "select_topics",
]

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
STRING = "std_msgs/msg/String"
IMAGE_TYPES = (IMAGE, COMPRESSED)


@dataclass(frozen=True)
class CameraProfile:
    """Default topic names of one camera driver; the first profile present in a bag wins."""

    name: str
    rgb: str
    aligned_depth: tuple[str, ...]
    unaligned_depth: tuple[str, ...]
    info: str


PROFILES: tuple[CameraProfile, ...] = (
    CameraProfile(
        "RealSense (realsense2_camera, /camera)",
        "/camera/color/image_raw",
        ("/camera/aligned_depth_to_color/image_raw",),
        ("/camera/depth/image_rect_raw",),
        "/camera/color/camera_info",
    ),
    CameraProfile(
        "RealSense (realsense2_camera >= 4.54, /camera/camera)",
        "/camera/camera/color/image_raw",
        ("/camera/camera/aligned_depth_to_color/image_raw",),
        ("/camera/camera/depth/image_rect_raw",),
        "/camera/camera/color/camera_info",
    ),
    CameraProfile(
        "ZED (zed_wrapper)",
        "/zed/zed_node/rgb/image_rect_color",
        ("/zed/zed_node/depth/depth_registered",),
        (),
        "/zed/zed_node/rgb/camera_info",
    ),
    CameraProfile(
        "ZED 2 (zed_wrapper, /zed2)",
        "/zed2/zed_node/rgb/image_rect_color",
        ("/zed2/zed_node/depth/depth_registered",),
        (),
        "/zed2/zed_node/rgb/camera_info",
    ),
    CameraProfile(
        "OAK (depthai_ros_driver)",
        "/oak/rgb/image_raw",
        ("/oak/stereo/image_raw",),
        (),
        "/oak/rgb/camera_info",
    ),
)
TAG_TOPICS = ("/tags", "/deal_ros/tags")


@dataclass
class TopicChoice:
    """The topics iter_rgbd_frames would use, and why."""

    rgb_topic: str
    depth_topic: str
    info_topic: str | None
    tags_topic: str | None
    depth_aligned: bool | None
    """True for aligned/registered depth, False for raw depth of another sensor, None unknown."""
    reasons: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _base(topic: str) -> str:
    """The raw image topic of an image_transport topic (…/compressed, …/compressedDepth)."""
    for suffix in ("/compressed", "/compressedDepth"):
        if topic.endswith(suffix):
            return topic[: -len(suffix)]
    return topic


def _namespace(topic: str) -> str:
    return _base(topic).rsplit("/", 1)[0]


def _prefer_raw(topics: list[str]) -> list[str]:
    """Drop compressed variants whose raw topic is also recorded (raw is cheaper to decode)."""
    present = set(topics)
    return [t for t in topics if t == _base(t) or _base(t) not in present]


def _with_transport(topics: dict[str, str], base: str, suffix: str) -> str | None:
    """The raw topic if present, else its image_transport variant (raw is cheaper to decode)."""
    if topics.get(base) == IMAGE:
        return base
    if topics.get(base + suffix) == COMPRESSED:
        return base + suffix
    return None


def _image_topics(topics: dict[str, str]) -> list[str]:
    return sorted(name for name, msgtype in topics.items() if msgtype in IMAGE_TYPES)


def require_topic(topics: dict[str, str], name: str, allowed: tuple[str, ...], role: str) -> None:
    """BagError unless `name` is in ``{topic: msgtype}`` with one of the `allowed` types."""
    if name not in topics:
        images = _image_topics(topics)
        listing = ", ".join(images) if images else "none"
        raise BagError(f"{role} topic {name} is not in the bag; image topics in the bag: {listing}")
    if topics[name] not in allowed:
        raise BagError(f"{role} topic {name} has type {topics[name]}, expected {' or '.join(allowed)}")


def find_tags_topic(topics: dict[str, str]) -> str | None:
    """The std_msgs/String topic named 'tags' in ``{topic: msgtype}`` (TAG_TOPICS first), or None."""
    strings = sorted(t for t, m in topics.items() if m == STRING)
    named = [t for t in TAG_TOPICS if t in strings] or [t for t in strings if t.rsplit("/", 1)[-1] == "tags"]
    return named[0] if named else None


def _profile_depth(topics: dict[str, str], profile: CameraProfile) -> tuple[str | None, bool | None]:
    """The profile's depth topic in the bag and whether it is aligned to colour (aligned ones first)."""
    for candidate in profile.aligned_depth:
        depth = _with_transport(topics, candidate, "/compressedDepth")
        if depth is not None:
            return depth, True
    for candidate in profile.unaligned_depth:
        depth = _with_transport(topics, candidate, "/compressedDepth")
        if depth is not None:
            return depth, False
    return None, None


def _match_profile(
    topics: dict[str, str], rgb_topic: str | None, depth_topic: str | None
) -> tuple[CameraProfile, str, str | None, bool | None] | None:
    """The first driver profile that fits the bag and the given topics: (profile, rgb, depth, aligned)."""
    for profile in PROFILES:
        rgb = _with_transport(topics, profile.rgb, "/compressed")
        if rgb is None or (rgb_topic is not None and rgb_topic != rgb):
            continue
        depth, depth_aligned = _profile_depth(topics, profile)
        if depth_topic is None and depth is None:
            continue
        return profile, rgb, depth, depth_aligned
    return None


def _colour_by_name(images: list[str]) -> str | None:
    colour = [
        t for t in images if "depth" not in t.lower() and any(k in t.lower() for k in ("color", "colour", "rgb"))
    ]
    return colour[0] if len(colour) == 1 else None


def _depth_by_name(images: list[str], rgb_topic: str | None) -> tuple[str, bool] | None:
    """The only (aligned-named, else any) depth-named image topic, and whether it is named aligned."""
    depths = [t for t in images if "depth" in t.lower() and t != rgb_topic]
    preferred = [t for t in depths if any(k in t.lower() for k in ("aligned", "registered"))]
    pick = preferred if preferred else depths
    return (pick[0], bool(preferred)) if len(pick) == 1 else None


def select_topics(
    topics: dict[str, str],
    rgb_topic: str | None = None,
    depth_topic: str | None = None,
    info_topic: str | None = None,
    tags_topic: str | None = None,
    want_tags_topic: bool = True,
) -> TopicChoice:
    """Pick RGB / depth / camera_info / tags topics from ``{topic: msgtype}``.

    Given names are checked; missing ones are chosen from the usual driver names (RealSense, ZED,
    OAK, raw before compressed), preferring depth aligned to colour, then by name heuristics.
    Raises BagError (listing the bag's image topics) when no RGB or depth topic can be found.
    """
    reasons: list[str] = []
    warnings: list[str] = []
    aligned: bool | None = None
    if rgb_topic is not None:
        require_topic(topics, rgb_topic, IMAGE_TYPES, "RGB")
        reasons.append(f"RGB {rgb_topic}: given")
    if depth_topic is not None:
        require_topic(topics, depth_topic, IMAGE_TYPES, "depth")
        reasons.append(f"depth {depth_topic}: given")
        unaligned = {name for profile in PROFILES for name in profile.unaligned_depth}
        aligned = False if _base(depth_topic) in unaligned else None
    profile_info: str | None = None
    match = _match_profile(topics, rgb_topic, depth_topic) if rgb_topic is None or depth_topic is None else None
    if match is not None:
        profile, rgb, depth, depth_aligned = match
        if rgb_topic is None:
            rgb_topic = rgb
            reasons.append(f"RGB {rgb}: default name of {profile.name}")
        if depth_topic is None and depth is not None:
            depth_topic, aligned = depth, depth_aligned
            kind = "aligned to colour" if depth_aligned else "NOT aligned to colour"
            reasons.append(f"depth {depth}: default name of {profile.name}, {kind}")
        profile_info = profile.info
    images = _prefer_raw(_image_topics(topics))
    if rgb_topic is None:
        rgb_topic = _colour_by_name(images)
        if rgb_topic is not None:
            reasons.append(f"RGB {rgb_topic}: the only colour-named image topic")
    if depth_topic is None and (by_name := _depth_by_name(images, rgb_topic)) is not None:
        depth_topic, named_aligned = by_name
        aligned = True if named_aligned else None
        reasons.append(f"depth {depth_topic}: the only {'aligned ' if named_aligned else ''}depth-named image topic")
    listing = ", ".join(images) if images else "none"
    if rgb_topic is None:
        raise BagError(f"no RGB topic found automatically; image topics in the bag: {listing} (choose one)")
    if depth_topic is None:
        raise BagError(f"no depth topic found automatically; image topics in the bag: {listing} (choose one)")
    if aligned is False:
        warnings.append(f"only unaligned depth ({depth_topic}) is recorded: DEAL needs depth aligned to colour "
                        "(RealSense: align_depth.enable:=true); pairs whose sizes differ are refused, as the nodes "
                        "refuse them")
    info_topic = _camera_info_topic(topics, rgb_topic, info_topic, profile_info, reasons, warnings)
    if want_tags_topic:
        tags_topic = _tags_topic(topics, tags_topic, reasons)
    return TopicChoice(rgb_topic, depth_topic, info_topic, tags_topic, aligned, reasons, warnings)


def _tags_topic(topics: dict[str, str], tags_topic: str | None, reasons: list[str]) -> str | None:
    """The given tags topic (checked), else the std_msgs/String topic named 'tags'."""
    if tags_topic is not None:
        require_topic(topics, tags_topic, (STRING,), "tags")
        reasons.append(f"tags {tags_topic}: given")
        return tags_topic
    found = find_tags_topic(topics)
    if found is not None:
        reasons.append(f"tags {found}: std_msgs/String topic named 'tags'")
    return found


def _camera_info_topic(
    topics: dict[str, str],
    rgb_topic: str,
    info_topic: str | None,
    profile_info: str | None,
    reasons: list[str],
    warnings: list[str],
) -> str | None:
    """The given camera_info topic (checked), else the one beside the RGB topic or of its driver profile."""
    if info_topic is not None:
        require_topic(topics, info_topic, (CAMERA_INFO,), "camera_info")
        reasons.append(f"camera_info {info_topic}: given")
        return info_topic
    for candidate in (_namespace(rgb_topic) + "/camera_info", profile_info):
        if candidate and topics.get(candidate) == CAMERA_INFO:
            reasons.append(f"camera_info {candidate}: beside the RGB topic")
            return candidate
    warnings.append(f"no camera_info for {rgb_topic}: frames will have no intrinsics")
    return None
