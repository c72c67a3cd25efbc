"""`deal-ros demo`: the main job on built-in defaults. No ROS, no GPU, no downloads.

Makes built-in close-up RGB-D scenes with ground truth (one or two of 8 objects covering 8-35 % of the frame,
deal_ros.lab.synthetic.make_closeup_scenes), trains the same model from tags alone, with DEAL
(the paper's depth-edge map and the robot-robust one) and with the default recipe (the support-plane prior)
for the same budget, and writes a report:
pseudo-label and mask mIoU per arm, loss curves and overlay images.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from deal_ros.cli.progress import PlainProgress, progress_bar
from deal_ros.inference.segmenter import Segmenter
from deal_ros.lab.experiment import ArmResult, run_arm
from deal_ros.lab.plots import plot_bars, plot_losses
from deal_ros.lab.recipes import DEMO_ARMS, demo_config, resolve_weights
from deal_ros.lab.synthetic import SyntheticFrame, make_closeup_scenes
from deal_ros.labels.colors import colorize, overlay, save_png
from deal_ros.models import describe_weights
from deal_ros.online.parameters import load_parameter_file
from deal_ros.storage.files import atomic_write_text, check_output_dir
from deal_ros.training.trainer import StepStats

if TYPE_CHECKING:
    from tqdm import tqdm


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="train with and without DEAL on built-in RGB-D scenes and report",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="demo_out", help="report folder (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=150, help="training steps per arm (default: %(default)s)")
    parser.add_argument("--train-frames", type=int, default=48, help="training scenes (default: %(default)s)")
    parser.add_argument("--eval-frames", type=int, default=16, help="held-out scenes (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="scene and network input size (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", default="auto",
                        help="ImageNet backbone weights: 'builtin' (the package's MobileNetV2), a local torchvision/"
                             "timm file, 'none' (random init); 'auto' (default): $DEAL_ROS_WEIGHTS if set, else "
                             "builtin")
    parser.add_argument("--config", help="YAML config to start from instead of the demo's defaults")
    parser.add_argument("--arms", nargs="+", choices=list(DEMO_ARMS), default=list(DEMO_ARMS),
                        help="which arms to run (default: all)")
    parser.set_defaults(func=run)


def _write_overlays(out: Path, arms: list[tuple[ArmResult, Segmenter]], frames: list[SyntheticFrame],
                    count: int = 4) -> list[str]:
    """Per example frame one PNG: RGB | ground truth | pseudo-label and mask of each arm."""
    paths = []
    for index, frame in enumerate(frames[:count]):
        tiles = [frame.rgb, colorize(frame.gt_mask)]
        for _, segmenter in arms:
            result = segmenter(frame.rgb, frame.depth_m, frame.tags)
            assert result.pseudo_label is not None  # tags given: a pseudo-label
            tiles += [colorize(result.pseudo_label), overlay(frame.rgb, result.mask)]
        row = np.concatenate([np.pad(t, ((2, 2), (2, 2), (0, 0)), constant_values=255) for t in tiles], axis=1)
        path = out / f"overlay_{index:02d}.png"
        save_png(path, row)
        paths.append(path.name)
    return paths


def run(args: argparse.Namespace) -> int:
    log = logging.getLogger("deal_ros.demo")
    start = time.perf_counter()
    out = check_output_dir(args.out, "--out folder")  # before any training
    height, width = args.size
    weights = resolve_weights(args.weights)
    if not weights:
        log.warning("--weights none: training from random init, where %d steps are too few for the classifier "
                    "to localise objects", args.steps)
    base = load_parameter_file(args.config) if args.config else demo_config(height, width, weights, args.seed)
    frames = make_closeup_scenes(args.train_frames + args.eval_frames, height, width, base.classes, seed=args.seed)
    train_frames, eval_frames = frames[: args.train_frames], frames[args.train_frames:]
    log.info("%d training + %d held-out scenes of %dx%d, classes %s", len(train_frames), len(eval_frames),
             height, width, base.classes)
    arms: list[tuple[ArmResult, Segmenter]] = []
    for name in args.arms:
        cfg = base.updated(DEMO_ARMS[name])
        with progress_bar(total=args.steps, desc=f"{name:<20}", unit="step") as bar:
            def on_step(stats: StepStats, bar: tqdm | PlainProgress = bar) -> None:
                bar.update(1)
                bar.set_postfix(cls=f"{stats.loss_cls:.3f}", deal=f"{stats.loss_deal:.3f}", seg=f"{stats.loss_seg:.3f}",
                                refresh=False)  # a refresh would print a line per step off a terminal
            result, trainer = run_arm(name, cfg, train_frames, eval_frames, args.steps, on_step)
        arms.append((result, Segmenter(cfg, trainer.model)))
        log.info("%s: pseudo-label mIoU %.3f, mask mIoU %.3f (%.2f s/step)", name, result.pseudo_miou,
                 result.mask_miou, result.mean_step_time_s)
    results = [r for r, _ in arms]
    weights_used = describe_weights(arms[0][1].model)
    plot_losses({r.name: r.history for r in results}, out / "loss_curves.png")
    plot_bars(results, out / "miou.png")
    overlays = _write_overlays(out, arms, eval_frames)
    wall = time.perf_counter() - start
    report = {"wall_time_s": wall, "steps": args.steps, "size": [height, width], "seed": args.seed,
              "train_frames": len(train_frames), "eval_frames": len(eval_frames), "weights": weights,
              "weights_loaded": weights_used,
              "arms": [r.summary() for r in results], "history": {r.name: r.history for r in results}}
    atomic_write_text(out / "report.json", json.dumps(report, indent=1))
    lines = ["# deal-ros demo report", "",
             f"{len(train_frames)} training / {len(eval_frames)} held-out built-in close-up scenes "
             f"at {height}x{width}, "
             f"{args.steps} steps per arm, seed {args.seed}.", f"Backbone weights: {weights_used}.",
             "Pseudo-label mIoU on the training scenes, mask mIoU on the held-out scenes (background included).", "",
             "| arm | pseudo-label mIoU | mask mIoU | s/step |", "|---|---|---|---|"]
    lines += [f"| {r.name} | {r.pseudo_miou:.3f} | {r.mask_miou:.3f} | {r.mean_step_time_s:.2f} |" for r in results]
    lines += ["", "![loss curves](loss_curves.png)", "![mIoU](miou.png)", "",
              "Overlays (RGB | ground truth | then per arm: pseudo-label, mask overlay):", ""]
    lines += [f"![{p}]({p})" for p in overlays]
    lines += ["", f"Wall time: {wall:.0f} s."]
    atomic_write_text(out / "report.md", "\n".join(lines) + "\n")
    print(lines[3] + "\n")
    print("\n".join(lines[6: 8 + len(results)]))
    print(f"\nreport: {out / 'report.md'} (wall time {wall:.0f} s)")
    return 0
