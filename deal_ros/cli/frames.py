"""Reading frames for a command: the tag and topic options, the tag source, the classes, the keyframe gate.

Shared by `deal-ros train` and `deal-ros label`; bad values become one UserError line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from deal_ros.cli import UserError
from deal_ros.errors import one_line

if TYPE_CHECKING:
    from deal_ros.config import DealRosConfig

MAX_EXAMPLE_CHARS = 240
"""Length of the example message per skip reason in a one-line error."""


class NoFramesError(UserError):
    """No frame of the bags could be used; the command adds what was read and skipped."""


def add_tag_options(parser: argparse.ArgumentParser) -> None:
    """--tags / --tags-topic / --tags-yaml (at most one); none = a tags topic found in the bag."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--tags", metavar="'A,B'",
                       help="class names in view for the whole bag: 'mug,box' or '[mug, box]'")
    group.add_argument("--tags-topic", metavar="TOPIC",
                       help="std_msgs/String topic with the tags (default: a topic named 'tags', if any)")
    group.add_argument("--tags-yaml", metavar="FILE",
                       help="tag schedule: list of {start_s, end_s, tags} over bag time (see TagSchedule)")


class _Replaced(argparse.Action):
    """A removed option, hidden from --help: given, it is refused with one line naming what replaced it."""

    def __init__(self, option_strings: Sequence[str], dest: str, replacement: str = "", **kwargs: Any) -> None:
        super().__init__(option_strings, dest, help=argparse.SUPPRESS, **kwargs)
        self.replacement = replacement

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        raise UserError(f"{option_string} is gone: {self.replacement}")


def add_replaced_option(parser: argparse.ArgumentParser, flag: str, replacement: str) -> None:
    """`flag VALUE` refused (UserError) with `replacement`, its new spelling ('use --set keyframe.min_interval_s=S')."""
    parser.add_argument(flag, action=_Replaced, replacement=replacement, dest=f"replaced_{flag.lstrip('-')}")


def add_topic_options(parser: argparse.ArgumentParser, slop: str) -> None:
    """--rgb-topic / --depth-topic; `slop` says where the pairing's slop comes from instead of the old --slop."""
    parser.add_argument("--rgb-topic", help="colour image topic (default: found from driver names)")
    parser.add_argument("--depth-topic", help="depth image topic aligned to colour (default: found from driver names)")
    add_replaced_option(parser, "--slop", slop)


OFFLINE_KEYFRAME = {"keyframe.min_interval_s": 0.0, "keyframe.max_interval_s": 0.0, "keyframe.motion_threshold": 0.0}
"""`deal-ros train`'s keyframe keys where neither --config nor --set gives them: every frame of a bag is a keyframe
(a bag is usually recorded for training; the trainer node's gate, keyframe.min_interval_s 0.5, applies when a
config names it, e.g. --config config/onboard.yaml)."""


def add_keyframe_options(parser: argparse.ArgumentParser) -> None:
    """The removed --min-gap / --min-motion, refused with their --set spelling."""
    add_replaced_option(parser, "--min-gap", "use --set keyframe.min_interval_s=S (the trainer node's key)")
    add_replaced_option(parser, "--min-motion", "use --set keyframe.motion_threshold=M (the trainer node's key)")


def tag_source(args: argparse.Namespace) -> Any:
    """The `tags` argument of iter_rgbd_frames for the parsed options (None = from a topic)."""
    from deal_ros.frames.tags import TagSchedule

    if args.tags is not None:
        return args.tags
    if args.tags_yaml is not None:
        return TagSchedule.from_yaml(args.tags_yaml)  # a bad file: TagError, one line from cli.main
    return None


def default_classes(args: argparse.Namespace, tags: Any) -> list[str]:
    """Class names when no config names them: the tags given, in order of appearance."""
    from deal_ros.frames.tags import TagSchedule, parse_tags

    if isinstance(tags, str):
        names = parse_tags(tags)
    elif isinstance(tags, TagSchedule):
        names = list(dict.fromkeys(t for r in tags.ranges for t in r.tags))
    else:
        from deal_ros.io.bag import scan_tag_names  # rosbags, cv2, torch: only to read the bag

        topic, names = scan_tag_names(args.bags, args.tags_topic)
        if topic is None:
            raise UserError("no tags: the bag has no tags topic (std_msgs/String named 'tags'); "
                            "give --tags, --tags-topic or --tags-yaml")
    if not names:
        raise UserError("the tags name no class; give the class names with --classes")
    return names


def keyframe_gate(cfg: DealRosConfig) -> Any:
    """The trainer node's keyframe gate with the config's keyframe section."""
    from deal_ros.online.keyframes import KeyframeGate

    return KeyframeGate.from_config(cfg.keyframe)


def read_frames(bags: str | Sequence[str], args: argparse.Namespace, cfg: DealRosConfig, tags: Any, stats: Any,
                **kwargs: Any) -> Any:
    """iter_rgbd_frames for the parsed topic / tag options and the config's classes, pairing (sync) and depth unit,
    so that train and label read a bag alike, and as the nodes do (bad values: BagError / TagError, one line)."""
    from deal_ros.io.bag import iter_rgbd_frames

    return iter_rgbd_frames(bags, args.rgb_topic, args.depth_topic, tags_topic=args.tags_topic, sync=cfg.sync,
                            tags=tags, classes=cfg.classes, stats=stats, depth_float_unit=cfg.depth.float_unit,
                            **kwargs)


def skips_line(stats: Any) -> str:
    """ReadStats in one line: frames read and skips by reason, each with its first example (the encoding,
    the unknown tag name), so that a refusal says what to fix."""
    reasons = stats.skip_reasons(lambda text: one_line(text, MAX_EXAMPLE_CHARS))
    return f"{stats.frames} frame(s) read" + (f"; skipped: {', '.join(reasons)}" if reasons else "")
