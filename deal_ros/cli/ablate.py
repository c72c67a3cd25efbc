"""`deal-ros ablate`: train the same model, data, seed and budget once per loss set and compare.

A loss set is '+'-joined tokens starting with 'cls' (the classification loss, always on):
deal (DEAL, method.md §2), isl, fsl, smooth (boundary-guided smoothness, S = depth edges),
smooth-pl (S = pseudo-label boundaries), boundary (semantic boundary branch + smoothness with the
learned S), ssc (SSC self-modulation + reconstruction), ssc-sm / recon (either alone). Everything not
named is off. Each set trains with deal_ros.experiment.run_arm on the same frames from the same seed.

Data: the demo's built-in RGB-D scenes (default), a folder with rgb/, depth/ and gt/ subfolders
(files matched by name; depth as 16-bit PNG in millimetres or .npy in metres; gt as 8-bit class ids,
0 = background), or a bag with ground-truth masks in --gt-dir named by frame index (000012.png) or
by colour stamp in nanoseconds. Tags come from the ground truth (classes present).

Writes to --out: ablation.json (per set: mIoUs, per-class IoU, step times, overhead, history),
ablation.md (the table) and ablation_miou.png (bars), atomically, after every set (ablation.json says
which are done), so that a stopped or failed run keeps every set that finished. The folder is checked
(writable, some room) before anything trains; a folder that stops taking the files mid-run is replaced
by a rescue folder that the log names. Step-time overhead is relative to cls+deal (or to the first set
when cls+deal is not run); on a shared CPU it is noisy.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from deal_ros.buffer import resize_frame
from deal_ros.cli import UserError, add_set_argument, parse_overrides
from deal_ros.config import IGNORE_INDEX, DealRosConfig
from deal_ros.data_checks import check_same_size
from deal_ros.files import atomic_write_text, check_free_space, check_output_dir, write_or_rescue
from deal_ros.io.image_codec import raw_depth_to_metres
from deal_ros.online.parameters import load_parameter_file

LOG = logging.getLogger("deal_ros.ablate")

TOKENS: dict[str, dict[str, Any]] = {
    "cls": {},
    "deal": {"loss.deal.enabled": True},
    "isl": {"loss.isl.enabled": True},
    "fsl": {"loss.fsl.enabled": True},
    "smooth": {"loss.smoothness.enabled": True, "loss.smoothness.source": "depth"},
    "smooth-pl": {"loss.smoothness.enabled": True, "loss.smoothness.source": "pseudo_label"},
    "boundary": {"loss.boundary.enabled": True, "loss.smoothness.enabled": True, "loss.smoothness.source": "learned"},
    "ssc": {"loss.ssc.enabled": True, "loss.recon.enabled": True},
    "ssc-sm": {"loss.ssc.enabled": True},
    "recon": {"loss.recon.enabled": True},
}
"""Token -> config overrides; a set's overrides are the union of its tokens' on top of everything off."""

ALL_OFF = {f"loss.{name}.enabled": False for name in ("deal", "isl", "fsl", "smoothness", "boundary", "ssc", "recon")}
DEFAULT_SETS = ("cls", "cls+deal", "cls+deal+isl+fsl", "cls+deal+smooth", "cls+deal+boundary", "cls+deal+ssc")
REFERENCE_SET = "cls+deal"
REPORT_BYTES = 5_000_000
"""About what the report files take (the JSON holds every set's loss history), for the free-space check."""


@dataclass
class Frame:
    """A labelled RGB-D frame (the experiment.LabelledFrame protocol)."""

    rgb: np.ndarray
    depth_m: np.ndarray
    gt_mask: np.ndarray
    tags: list[str] = field(default_factory=list)


def set_overrides(name: str) -> dict[str, Any]:
    """'cls+deal+fsl' -> config overrides (everything else off); unknown tokens are a UserError."""
    tokens = [t.strip() for t in name.split("+") if t.strip()]
    if not tokens or tokens[0] != "cls":
        raise UserError(f"loss set {name!r} must start with 'cls' (e.g. 'cls+deal+fsl')")
    unknown = [t for t in tokens if t not in TOKENS]
    if unknown:
        raise UserError(f"unknown loss token(s) {unknown} in {name!r}; known: {sorted(TOKENS)}")
    overrides = dict(ALL_OFF)
    for token in tokens:
        overrides.update(TOKENS[token])
    return overrides


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("ablate", help="compare loss sets (DEAL, ISL, FSL, smoothness, SSC) on one budget",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), metavar="SET",
                        help=f"loss sets, tokens joined by '+' from {sorted(TOKENS)} (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per set (default: %(default)s)")
    parser.add_argument("--train-frames", type=int, default=48, help="training frames (default: %(default)s)")
    parser.add_argument("--eval-frames", type=int, default=16, help="held-out frames (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="network input size; frames are resized to it (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="auto",
                        help="local ImageNet backbone weights; 'auto' and 'none' as for `deal-ros demo`")
    parser.add_argument("--config", help="YAML config to start from instead of the demo's defaults")
    parser.add_argument("--classes", help="comma-separated class names for --folder / --bag (default: config's)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--folder", help="folder with rgb/, depth/ and gt/ subfolders")
    source.add_argument("--bag", help="rosbag with RGB-D (ground truth in --gt-dir)")
    parser.add_argument("--gt-dir", help="ground-truth masks for --bag, named by frame index or stamp_ns")
    add_set_argument(parser, "config override applied to every set, e.g. --set train.batch_size=4")
    parser.add_argument("--out", default="ablate_out", help="output folder (default: %(default)s)")
    parser.set_defaults(func=run)


def _tags(gt: np.ndarray, classes: list[str], min_fraction: float = 0.001) -> list[str]:
    counts = np.bincount(gt.ravel(), minlength=len(classes) + 1)
    return [c for k, c in enumerate(classes, start=1) if counts[k] >= max(1, min_fraction * gt.size)]


def _fit(rgb: np.ndarray, depth_m: np.ndarray, gt_path: Path, size: tuple[int, int], classes: list[str]) -> Frame:
    """The frame at the network's input `size`; its ground truth must be at the frame's own size."""
    height, width = size
    gt = _read_gt(gt_path)
    check_same_size(str(gt_path), "ground truth", gt, "its frame", rgb)
    if rgb.shape[:2] != (height, width):
        rgb, depth_m = resize_frame(rgb, depth_m, size)
        gt = cv2.resize(gt, (width, height), interpolation=cv2.INTER_NEAREST)
    if int(gt[gt != IGNORE_INDEX].max(initial=0)) > len(classes):
        raise UserError(f"ground truth holds class id {int(gt.max())} but only {len(classes)} classes are known")
    return Frame(rgb, depth_m.astype(np.float32), gt, _tags(gt, classes))


def _read_depth(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return raw_depth_to_metres(np.load(path), "32FC1")
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    if raw is None:
        raise UserError(f"cannot read depth {path}")
    return raw_depth_to_metres(raw, "16UC1" if raw.dtype == np.uint16 else "32FC1")


def _read_gt(path: Path) -> np.ndarray:
    gt = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if gt is None:
        raise UserError(f"cannot read ground truth {path}")
    return gt


def load_folder(folder: str | Path, size: tuple[int, int], classes: list[str]) -> list[Frame]:
    """rgb/NAME.(png|jpg), depth/NAME.(png|npy), gt/NAME.png -> frames, sorted by name."""
    root = Path(folder)
    for sub in ("rgb", "depth", "gt"):
        if not (root / sub).is_dir():
            raise UserError(f"{root} needs rgb/, depth/ and gt/ subfolders ({sub}/ is missing)")
    frames = []
    for rgb_path in sorted(p for p in (root / "rgb").iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")):
        depth_path = next((p for p in (root / "depth" / f"{rgb_path.stem}{e}" for e in (".png", ".npy"))
                           if p.exists()), None)
        gt_path = root / "gt" / f"{rgb_path.stem}.png"
        if depth_path is None or not gt_path.exists():
            LOG.warning("%s: no matching depth or gt, skipped", rgb_path.name)
            continue
        bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
        frames.append(_fit(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), _read_depth(depth_path), gt_path,
                           size, classes))
    return frames


def load_bag(bag: str, gt_dir: str, size: tuple[int, int], classes: list[str], limit: int,
             depth_float_unit: str = "m") -> list[Frame]:
    """Frames of a bag that have a ground-truth mask (gt_dir/<index:06d>.png or gt_dir/<stamp_ns>.png);
    32FC1 depth in `depth_float_unit` (the setting depth.float_unit)."""
    from deal_ros.io.bag import iter_rgbd_frames

    gt_root = Path(gt_dir)
    if not gt_root.is_dir():
        raise UserError(f"--gt-dir {gt_dir} is not a folder")
    frames = []
    for frame in iter_rgbd_frames(bag, require_tags=False, depth_float_unit=depth_float_unit):
        gt_path = next((p for p in (gt_root / f"{frame.index:06d}.png", gt_root / f"{frame.stamp_ns}.png")
                        if p.exists()), None)
        if gt_path is None:
            continue
        frames.append(_fit(np.array(frame.rgb), np.array(frame.depth_m), gt_path, size, classes))
        if len(frames) >= limit:
            break
    return frames


def _base_config(args: argparse.Namespace) -> DealRosConfig:
    from deal_ros.cli.demo import demo_config, resolve_weights

    height, width = args.size
    args.weights = resolve_weights(args.weights)
    base = load_parameter_file(args.config) if args.config else demo_config(height, width, args.weights, args.seed)
    overrides: dict[str, Any] = {"model.input_height": height, "model.input_width": width, "train.seed": args.seed}
    if args.classes:
        overrides["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    return base.updated({**overrides, **parse_overrides(args.overrides)})


def _frames(args: argparse.Namespace, base: DealRosConfig) -> tuple[list[Frame], list[Any]]:
    from deal_ros.synthetic import make_closeup_scenes

    size = tuple(args.size)
    total = args.train_frames + args.eval_frames
    if args.folder:
        frames: list[Any] = load_folder(args.folder, size, base.classes)
    elif args.bag:
        if not args.gt_dir:
            raise UserError("--bag needs --gt-dir with the ground-truth masks")
        frames = load_bag(args.bag, args.gt_dir, size, base.classes, total, base.depth.float_unit)
    else:
        frames = make_closeup_scenes(total, *size, base.classes, seed=args.seed)
    if len(frames) < 2:
        raise UserError(f"need at least 2 labelled frames, found {len(frames)}")
    n_train = min(args.train_frames, len(frames) - 1)
    return frames[:n_train], frames[n_train:total]


def format_table(rows: list[dict[str, Any]], reference: str) -> str:
    lines = [f"| loss set | pseudo-label mIoU | mask mIoU | s/step | overhead vs {reference} |",
             "|---|---|---|---|---|"]
    for r in rows:
        overhead = ("—" if r["name"] == reference or r["step_time_overhead"] is None
                    else f"{100 * r['step_time_overhead']:+.0f} %")
        lines.append(f"| {r['name']} | {r['pseudo_miou']:.3f} | {r['mask_miou']:.3f} | "
                     f"{r['mean_step_time_s']:.3f} | {overhead} |")
    return "\n".join(lines)


def summary_rows(results: list[Any], reference: str) -> list[dict[str, Any]]:
    """Each set's summary with its step-time overhead vs `reference` (None until the reference has run)."""
    ref_time = next((r.mean_step_time_s for r in results if r.name == reference), None)
    rows = []
    for r in results:
        row = r.summary()
        row["step_time_overhead"] = (None if ref_time is None else
                                     r.mean_step_time_s / ref_time - 1.0 if ref_time > 0 else 0.0)
        rows.append(row)
    return rows


def write_report(out: Path, report: dict[str, Any], results: list[Any]) -> Path:
    """ablation.json, ablation.md and ablation_miou.png of the sets done so far, atomically; returns the folder they
    are in: `out`, or a rescue folder (warned) when `out` stops taking them, where the later sets go too."""
    from deal_ros.experiment import plot_bars

    header = (f"# deal-ros ablation\n\n{report['train_frames']} training / {report['eval_frames']} held-out frames "
              f"({report['source']}) at {report['size'][0]}x{report['size'][1]}, {report['steps']} steps per set, "
              f"seed {report['seed']}, weights: {report['weights'] or 'random init'}; sets done: "
              f"{report['sets_done']}. Step times are wall-clock means over all steps.\n\n")
    table = format_table(report["sets"], report["reference"])
    written = write_or_rescue(out, {
        "ablation.json": lambda p: atomic_write_text(p, json.dumps(report, indent=1)),
        "ablation.md": lambda p: atomic_write_text(p, header + table + "\n\n![mIoU](ablation_miou.png)\n"),
        "ablation_miou.png": lambda p: plot_bars(results, p),
    })
    if written.rescued:
        LOG.warning("cannot write the report into %s (%s): the sets done so far, and those to come, are in %s",
                    out, written.failure, written.folder)
    return written.folder


def run(args: argparse.Namespace) -> int:
    from deal_ros.experiment import run_arm

    if args.steps < 1 or args.train_frames < 1 or args.eval_frames < 0:
        raise UserError("need --steps >= 1, --train-frames >= 1 and --eval-frames >= 0")
    sets = list(dict.fromkeys(args.sets))
    configs = {}
    base = _base_config(args)
    for name in sets:
        configs[name] = base.updated(set_overrides(name))
    out = check_output_dir(args.out, "--out folder")  # read-only or misnamed: refused before any training
    check_free_space(out, REPORT_BYTES, "--out folder", "the report")
    train_frames, eval_frames = _frames(args, base)
    LOG.info("%d training + %d held-out frames at %dx%d; %d steps per set", len(train_frames), len(eval_frames),
             *args.size, args.steps)
    start = time.perf_counter()
    reference = REFERENCE_SET if REFERENCE_SET in sets else sets[0]
    source = args.folder or args.bag or "built-in scenes"
    results = []
    for name in sets:
        result, _ = run_arm(name, configs[name], train_frames, eval_frames, args.steps)
        LOG.info("%s: pseudo-label mIoU %.3f, mask mIoU %.3f, %.3f s/step", name, result.pseudo_miou,
                 result.mask_miou, result.mean_step_time_s)
        results.append(result)
        report = {"sets": summary_rows(results, reference), "reference": reference, "steps": args.steps,
                  "size": list(args.size), "seed": args.seed, "source": source, "train_frames": len(train_frames),
                  "eval_frames": len(eval_frames), "weights": args.weights,
                  "wall_time_s": time.perf_counter() - start, "sets_done": f"{len(results)} of {len(sets)}",
                  "config_overrides": {r.name: set_overrides(r.name) for r in results},
                  "history": {r.name: r.history for r in results}}
        out = write_report(out, report, results)
    print(format_table(summary_rows(results, reference), reference))
    print(f"\nreport: {out / 'ablation.json'}, {out / 'ablation.md'}, {out / 'ablation_miou.png'}")
    return 0
