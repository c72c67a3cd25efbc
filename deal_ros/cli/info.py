"""`deal-ros info BAG [BAG...] [--json]`: what is in a bag and whether deal-ros can train on it.

The verdict agrees with what `train` will do: besides topics and encodings, frames are synchronised
and decoded as for training (up to io.bag.CHECK_FRAMES usable ones), so a bag whose every frame
`train` would skip (depth with no valid pixel, constant depth, undecodable images, no RGB/depth pair)
is NOT USABLE, with the reason. Exit codes: 0 every bag usable, 1 some bag not usable (the verdict
says why), 2 user error (missing or unreadable bag).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TextIO


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "info",
        help="show topics, rates, encodings of a bag and which topics training would use",
        description="Inspect rosbag2 (sqlite3, mcap) or ROS 1 bags: topics, types, message counts, "
        "mean rates, image encodings, and the RGB / depth / camera_info / tags topics deal-ros "
        "would use (with the reasons), or why the bag cannot be used.",
    )
    parser.add_argument("bags", nargs="+", metavar="BAG", help="rosbag2 directory, .db3, .mcap or .bag file")
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from deal_ros.io.bag import inspect_bag

    out = out or sys.stdout
    infos = [inspect_bag(bag) for bag in args.bags]  # a BagError becomes one line in cli.main
    if args.json:
        json.dump([info.to_dict() for info in infos], out, indent=2)
        out.write("\n")
    else:
        for i, info in enumerate(infos):
            if i:
                out.write("\n")
            out.write(format_info(info))
    return 0 if all(info.usable for info in infos) else 1


def format_info(info: object) -> str:
    """Human-readable report of a BagInfo."""
    from deal_ros.io.bag import BagInfo

    assert isinstance(info, BagInfo)
    lines = [
        f"bag:      {info.path}",
        f"storage:  {info.storage}",
        f"duration: {info.duration_s:.3f} s, {info.message_count} messages",
        "",
    ]
    width = max([len(t.name) for t in info.topics] + [5])
    type_width = max([len(t.msgtype) for t in info.topics] + [4])
    lines.append(f"{'topic':<{width}}  {'type':<{type_width}}  {'count':>7}  {'rate Hz':>8}  encoding")
    for t in info.topics:
        encoding = ""
        if t.encoding is not None:
            encoding = t.encoding + (f" {t.width}x{t.height}" if t.width else "")
        lines.append(
            f"{t.name:<{width}}  {t.msgtype:<{type_width}}  {t.count:>7}  {t.rate_hz:>8.2f}  {encoding}"
        )
    lines.append("")
    verdict = "USABLE for training" if info.usable else "NOT USABLE"
    lines.append(f"verdict: {verdict}")
    if info.frames_usable is not None:
        skipped = ", ".join(f"{reason} {count}" for reason, count in sorted(info.frames_skipped.items()))
        lines.append(f"  frames:      {info.frames_usable} usable" + (f" (skipped: {skipped})" if skipped else ""))
    if info.choice is not None:
        c = info.choice
        lines.append(f"  rgb:         {c.rgb_topic}")
        lines.append(f"  depth:       {c.depth_topic}")
        lines.append(f"  camera_info: {c.info_topic or '-'}")
        lines.append(f"  tags:        {c.tags_topic or '- (give --tags or a tag schedule)'}")
        lines += [f"  why: {reason}" for reason in c.reasons]
    lines += [f"  problem: {p}" for p in info.problems]
    lines += [f"  warning: {w}" for w in info.warnings]
    return "\n".join(lines) + "\n"
