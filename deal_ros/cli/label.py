"""`deal-ros label CHECKPOINT BAG --out DIR`: pixel labels for every synchronised frame of a bag.

Runs the trained network (classes and model from the checkpoint's metadata) on each RGB-D frame
and writes, numbered by frame (NNNNNN.png, lossless PNG):

    DIR/mask/          uint8 class ids (0 = background), what a planner would get
    DIR/pseudo_label/  uint8 labels from CAMs + tags, 255 = ignore; only frames whose tags are known
    DIR/overlay/       the mask blended over the colour image
    DIR/classes.json   id -> class name, ignore value, checkpoint and step
    DIR/frames.json    per frame: index, header stamp, record time, tags
    DIR/labelled_bag/  (unless --no-bag) a rosbag2 (mcap) with every original message plus
                       PREFIX/mask (mono8), PREFIX/pseudo_label (mono8), PREFIX/confidence (32FC1)
                       and PREFIX/overlay (rgb8), stamped and recorded like the colour image

Tags only matter for the pseudo-labels: --tags, --tags-topic, --tags-yaml, or else a tags topic in
the bag; a frame without known tags (none yet, or names that are not classes) gets a mask but no
pseudo-label. The labelled bag plays back with `ros2 bag play` into anything that subscribes to the
label topics.

A run replaces a previous result in DIR as a whole, and only once it has succeeded: everything is
written to a temporary folder inside DIR and swapped in at the end, and what the run does not write
(the labelled bag, with --no-bag) is removed with the rest of the previous result, so DIR never mixes
two runs. A failed run (a bad bag, a full disk, Ctrl-C) leaves a previous result in DIR as it was and
leaves nothing behind that blocks a rerun.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from deal_ros.cli import UserError
from deal_ros.cli.frames import add_tag_options, add_topic_options, read_frames, skips_line, tag_source
from deal_ros.config import IGNORE_INDEX
from deal_ros.errors import OutputError, describe_os_error
from deal_ros.io.encodings import OUTPUT_ENCODINGS
from deal_ros.labels.colors import overlay

if TYPE_CHECKING:
    from deal_ros.config import DealRosConfig
    from deal_ros.inference.segmenter import Segmenter
    from deal_ros.io.bag import RGBDFrame

PRODUCTS = ("mask", "pseudo_label", "overlay", "labelled_bag", "frames.json", "classes.json")
"""What a run writes into DIR, in the order it is swapped in (classes.json, which eval reads, last)."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("label", help="write masks, pseudo-labels and a labelled bag for a bag",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model.safetensors written by deal-ros train")
    parser.add_argument("bag", metavar="BAG", help="rosbag2 directory, .db3 or .mcap (ROS 1 .bag with --no-bag)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    add_tag_options(parser)
    add_topic_options(parser, "frames are paired with the checkpoint's sync.slop (deal-ros train --set sync.slop=S)")
    parser.add_argument("--no-bag", action="store_true", help="write the PNGs only, no labelled bag")
    parser.add_argument("--topic-prefix", default="/deal", metavar="PREFIX",
                        help="namespace of the label topics in the labelled bag (default: %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deal_ros.storage.files import check_output_dir, refuse_non_folder, remove_stale_temp_files, staging_dir

    prefix = "/" + args.topic_prefix.strip("/")
    if prefix == "/":
        raise UserError("--topic-prefix must name a namespace, e.g. /deal")
    out = refuse_non_folder(args.out, "--out folder")
    bag_out = out / "labelled_bag"

    from deal_ros.compute.device import resolve_device
    from deal_ros.inference.segmenter import Segmenter
    from deal_ros.io.bag import ReadStats
    from deal_ros.storage.checkpoint import load_checkpoint

    cfg = load_checkpoint(args.checkpoint).config
    segmenter = Segmenter(cfg, device=resolve_device(args.device))
    step = segmenter.load(args.checkpoint)
    read_stats = ReadStats()
    frames = read_frames(args.bag, args, cfg, tag_source(args), read_stats, require_tags=False,
                         skip_degenerate_depth=False)
    check_output_dir(out, "--out folder")  # writable, before the first frame is labelled
    if cfg.pseudo_label.part_contrast:
        _remember_parts(args, cfg, segmenter)
    for stale in remove_stale_temp_files(out):
        print(f"removed {stale}, left by a run that was killed")
    stage = staging_dir(out, "label")
    try:
        records = _label(args, frames, segmenter, step, cfg.classes, stage, prefix)
        if not records:
            raise UserError(f"no usable frames in {args.bag} ({skips_line(read_stats)})")
        _swap_in(stage, out)
    except OSError as exc:  # a full disk, a file size limit: name the folder, say nothing there changed
        raise OutputError(f"cannot write the labels into {out}: {describe_os_error(exc)}; "
                          f"what {out} held before is unchanged") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    labelled = sum(r["tags"] is not None for r in records)
    print(f"labelled {len(records)} frame(s) with {args.checkpoint} (step {step}); "
          f"pseudo-labels for {labelled} frame(s) with known tags")
    print(read_stats.summary())
    if segmenter.representatives is not None:
        from deal_ros.labels.class_groups import describe_group, groups_of

        for group in groups_of(segmenter.representatives):  # as `deal-ros train` said at the end
            names = [cfg.classes[k] for k in group]
            print(f"warning: {describe_group(names, cfg.pseudo_label.merge_indistinct)}")
    print(f"PNGs: {out}/{{mask,pseudo_label,overlay}}/" + ("" if args.no_bag else f"\nlabelled bag: {bag_out}"))
    return 0


def _remember_parts(args: argparse.Namespace, cfg: DealRosConfig, segmenter: Segmenter) -> None:
    """pseudo_label.part_contrast: a first pass over the bag puts the depth parts of its tagged frames in the
    segmenter's bank, so that every frame is named from the contrast with all the others, the first as the last."""
    from deal_ros.cli.progress import progress_bar
    from deal_ros.io.bag import ReadStats

    for frame in progress_bar(read_frames(args.bag, args, cfg, tag_source(args), ReadStats(), require_tags=False,
                                          skip_degenerate_depth=False), desc="parts", unit="frame"):
        if frame.tags_known and frame.tags:
            segmenter.remember(frame.rgb, frame.depth_m, frame.tags)
    bank = segmenter.part_bank
    if bank is None or bank.patterns < 2:
        print("part contrast: the bag has one tag pattern (or none): the CAM names every part")
    else:
        print(f"part contrast: the depth parts of {len(bank)} tagged frame(s) of {bank.patterns} tag patterns in the "
              f"bank (the newest {bank.frames_per_pattern} of each pattern)")


def _label(args: argparse.Namespace, frames: Iterable[RGBDFrame], segmenter: Segmenter, step: int, classes: list[str],
           stage: Path, prefix: str) -> list[dict[str, Any]]:
    """Write every product of the run into `stage`; returns the frame records (empty: no frame was usable)."""
    from deal_ros.cli.progress import progress_bar

    for sub in ("mask", "pseudo_label", "overlay"):
        (stage / sub).mkdir()
    names = ["background", *classes]
    writer = None if args.no_bag else LabelledBagWriter(args.bag, stage / "labelled_bag", prefix)
    records: list[dict[str, Any]] = []
    try:
        for frame in progress_bar(frames, desc="label", unit="frame"):
            rgb = frame.rgb if frame.rgb.flags.writeable else frame.rgb.copy()  # torch refuses read-only views
            result = segmenter(rgb, frame.depth_m, frame.tags if frame.tags_known else None)
            shown = overlay(frame.rgb, result.mask)
            name = f"{frame.index:06d}.png"
            _write_png(stage / "mask" / name, result.mask)
            _write_png(stage / "overlay" / name, cv2.cvtColor(shown, cv2.COLOR_RGB2BGR))
            if result.pseudo_label is not None:
                _write_png(stage / "pseudo_label" / name, result.pseudo_label)
            if writer is not None:
                images = {"mask": result.mask, "confidence": result.confidence, "overlay": shown}
                if result.pseudo_label is not None:
                    images["pseudo_label"] = result.pseudo_label
                writer.add(frame.log_ns, frame.stamp_ns, frame.frame_id, images)
            records.append({"index": frame.index, "stamp_ns": frame.stamp_ns, "log_ns": frame.log_ns,
                            "tags": frame.tags if frame.tags_known else None})
        if writer is not None:
            writer.close()
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    (stage / "frames.json").write_text(json.dumps(records, indent=0))
    (stage / "classes.json").write_text(json.dumps(
        {"classes": names, "ignore_index": IGNORE_INDEX, "checkpoint": str(args.checkpoint), "step": step}, indent=1))
    return records


def _swap_in(stage: Path, out: Path) -> None:
    """Move the run's products from `stage` into `out`, each replacing the previous one; a previous product this
    run did not write (a labelled bag, after --no-bag) goes too. The previous ones stay in `stage` until all are
    in, and move back if a move fails, so `out` holds one run's result, never a mix."""
    previous = stage / ".previous"
    previous.mkdir()
    moved: list[tuple[Path, Path | None]] = []
    try:
        for name in PRODUCTS:
            new, target = stage / name, out / name
            old = None
            if target.exists() or target.is_symlink():
                old = previous / name
                os.replace(target, old)
            moved.append((target, old))
            if new.exists():
                os.replace(new, target)
    except BaseException:
        for target, old in reversed(moved):
            with contextlib.suppress(OSError):
                if target.exists():
                    os.replace(target, stage / f".failed-{target.name}")
                if old is not None:
                    os.replace(old, target)
        raise


def _write_png(path: Path, image: np.ndarray) -> None:
    """cv2.imwrite, whose failures (a full disk) return False instead of raising: an OSError naming the file."""
    if not cv2.imwrite(str(path), image):
        raise OSError(f"cannot write {path} (disk full or not writable?)")


class LabelledBagWriter:
    """Copies a bag into a new mcap bag and adds label images recorded beside their colour image.

    The copy runs behind the labelling: before the labels of a frame recorded at time t are written,
    every original message recorded up to t is, so the output stays in record-time order while
    neither the bag nor the labels are held in memory.
    """

    def __init__(self, source: str | Path, target: Path, prefix: str) -> None:
        from deal_ros.io.bag import BagError, BagWriter, open_bag, read_messages
        from deal_ros.io.bag.topics import IMAGE

        self._stack = contextlib.ExitStack()
        self._reader = self._stack.enter_context(open_bag(source))
        if not getattr(self._reader, "is2", True):
            self._stack.close()
            raise BagError(f"{source} is a ROS 1 bag: a labelled rosbag2 copy needs a rosbag2 source; "
                           "give --no-bag (or convert it first with rosbags-convert)")
        self._bag = BagWriter(target, storage="mcap").open()
        self._copies: dict[int, Any] = {}
        added: dict[tuple[Any, ...], Any] = {}
        for conn in self._reader.connections:
            key = (conn.topic, conn.msgtype, conn.ext.serialization_format, repr(conn.ext.offered_qos_profiles))
            if key not in added:
                added[key] = self._bag.add_connection_like(conn, self._reader.typestore)
            self._copies[conn.id] = added[key]
        existing = {c.topic for c in self._reader.connections}
        self._label_topics = {suffix: f"{prefix}/{suffix}" for suffix in OUTPUT_ENCODINGS}
        for topic in self._label_topics.values():
            if topic in existing:
                self.abort()
                raise BagError(f"{source} already has a topic {topic}; choose another --topic-prefix")
            self._bag.add_topic(topic, IMAGE)
        self._source = source
        self._messages: Iterator[tuple[Any, int, Any]] = read_messages(
            self._reader, self._reader.connections, source)
        self._pending: tuple[Any, int, Any] | None = None

    def _copy_until(self, log_ns: int | None) -> None:
        """Write the original messages recorded at or before log_ns (all of them for None)."""
        while True:
            if self._pending is None:
                self._pending = next(self._messages, None)
                if self._pending is None:
                    return
            conn, t, raw = self._pending
            if log_ns is not None and t > log_ns:
                return
            self._bag.write_raw(self._copies[conn.id], t, raw)
            self._pending = None

    def add(self, log_ns: int, stamp_ns: int, frame_id: str, images: dict[str, np.ndarray]) -> None:
        """Write label images (keys of OUTPUT_ENCODINGS) with the colour image's header stamp and record time."""
        self._copy_until(log_ns)
        for suffix, image in images.items():
            self._bag.write_image(self._label_topics[suffix], log_ns, image, OUTPUT_ENCODINGS[suffix],
                                  stamp_ns=stamp_ns, frame_id=frame_id)

    def close(self) -> None:
        """Copy the rest of the source and finish both files."""
        try:
            self._copy_until(None)
            self._bag.close()
        finally:
            self._stack.close()

    def abort(self) -> None:
        """Close after an error (the caller removes the partial bag)."""
        self._bag.abort()
        self._stack.close()
