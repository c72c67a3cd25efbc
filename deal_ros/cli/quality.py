"""`deal-ros bench quality`: label quality of training recipes, on held-out scenes, same budget, seeds and data.

Each recipe (a named set of config overrides on top of the package defaults) is trained for --steps
from each seed on the same training frames, then scored on held-out frames the recipe never saw:
mask mIoU (the segmentation head, no tags: what a planner gets) and pseudo-label mIoU (CAMs + the
frame's tags, 255 counted as background: what `deal-ros label` writes), per class, with a learning
curve every --eval-every steps.

Data: built-in close-up scenes (default: one or two objects covering 8-35 % of the frame, 8 classes,
`deal_ros.lab.synthetic.make_closeup_scenes`), built-in tabletop scenes (small objects), or your own:
--bag/--gt-dir for training and --val-bag/--val-gt for evaluation (masks named by frame index
000012.png or by colour stamp in ns; tags from the ground truth), or --folder/--val-folder with rgb/,
depth/ and gt/ subfolders. Built-in training and held-out scenes come from different seeds.

Writes to --out: quality.json (everything), quality.md (tables) and quality.png (per-class IoU bars
and the learning curves), atomically, after every recipe (quality.json says which are done), so that a
stopped or failed run keeps every recipe that finished. The folder is checked (writable, some room)
before anything trains; a folder that stops taking the files mid-run is replaced by a rescue folder
that the log names.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.cli import UserError, add_set_argument
from deal_ros.config.loading import parse_overrides
from deal_ros.lab.recipes import DEFAULT_RECIPES, RECIPES, parse_recipe
from deal_ros.storage.files import atomic_write_text, check_free_space, check_output_dir, write_or_rescue

LOG = logging.getLogger("deal_ros.quality")


MAX_SCENE_SIDE = 4096
"""Largest height and width of a built-in scene: the largest network input (model.input_height/width); beyond it
a scene only costs memory (100000x100000 needs 75 GiB)."""

REPORT_BYTES = 5_000_000
"""About what the report files take (the PNG and the JSON with the learning curves), for the free-space check."""

SCENES = {
    "closeup": {"train_seed": 100, "val_seed": 200},
    "tabletop": {"train_seed": 300, "val_seed": 400},
}


def register(which: argparse._SubParsersAction) -> None:
    parser = which.add_parser("quality", help="label quality of recipes on held-out scenes (mIoU per class)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), metavar="RECIPE",
                        help=f"named recipes from {sorted(RECIPES)} or NAME:KEY=VALUE,... (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per recipe (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="network input size (default: %(default)s)")
    parser.add_argument("--scenes", choices=sorted(SCENES), default="closeup",
                        help="built-in scenes (default: closeup)")
    parser.add_argument("--train-frames", type=int, default=120, help="built-in training scenes (default: 120)")
    parser.add_argument("--val-frames", type=int, default=48, help="built-in held-out scenes (default: 48)")
    parser.add_argument("--scene-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                        help="camera resolution of the built-in scenes (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=100, help="learning-curve period in steps (0 = end only)")
    parser.add_argument("--weights", default="auto", help="backbone weights as for `deal-ros demo` (default: builtin)")
    parser.add_argument("--classes", help="comma-separated class names for your own data")
    parser.add_argument("--bag", help="training bag (ground truth in --gt-dir)")
    parser.add_argument("--gt-dir", help="ground-truth masks of --bag")
    parser.add_argument("--val-bag", help="held-out bag (ground truth in --val-gt)")
    parser.add_argument("--val-gt", help="ground-truth masks of --val-bag")
    parser.add_argument("--folder", help="training folder with rgb/, depth/, gt/")
    parser.add_argument("--val-folder", help="held-out folder with rgb/, depth/, gt/")
    add_set_argument(parser, "config override for every recipe, e.g. --set train.batch_size=4")
    parser.add_argument("--out", default="quality_out", help="output folder (default: %(default)s)")
    parser.set_defaults(func=run)


def _frames(args: argparse.Namespace, classes: list[str], depth_float_unit: str) -> tuple[list[Any], list[Any], str]:
    from deal_ros.io.ground_truth import load_bag, load_folder

    size = tuple(args.size)
    if args.bag or args.folder:
        if args.bag and not (args.gt_dir and args.val_bag and args.val_gt):
            raise UserError("--bag needs --gt-dir, --val-bag and --val-gt (held-out data the recipe never saw)")
        if args.folder and not args.val_folder:
            raise UserError("--folder needs --val-folder (held-out data the recipe never saw)")
        if args.bag:
            train = load_bag(args.bag, args.gt_dir, size, classes, 10**9, depth_float_unit)
            val = load_bag(args.val_bag, args.val_gt, size, classes, 10**9, depth_float_unit)
            source = f"{args.bag} -> {args.val_bag}"
        else:
            train, val = load_folder(args.folder, size, classes), load_folder(args.val_folder, size, classes)
            source = f"{args.folder} -> {args.val_folder}"
    else:
        from deal_ros.lab.synthetic import make_closeup_scenes, make_tabletop_scenes

        seeds = SCENES[args.scenes]
        make = make_closeup_scenes if args.scenes == "closeup" else make_tabletop_scenes
        height, width = args.scene_size
        train = make(args.train_frames, height, width, classes, seed=seeds["train_seed"])
        val = make(args.val_frames, height, width, classes, seed=seeds["val_seed"])
        source = f"built-in {args.scenes} scenes {height}x{width} (train seed {seeds['train_seed']}, " \
                 f"held-out seed {seeds['val_seed']})"
    if not train or not val:
        raise UserError(f"need labelled training and held-out frames, found {len(train)} and {len(val)}")
    return train, val, source


def _classes(args: argparse.Namespace) -> list[str]:
    if args.classes:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if args.bag or args.folder:
        raise UserError("your own data needs --classes (in the order of the ground-truth ids 1, 2, ...)")
    from deal_ros.lab.synthetic import CLOSEUP_CLASSES, DEFAULT_CLASSES

    return list(CLOSEUP_CLASSES if args.scenes == "closeup" else DEFAULT_CLASSES)


def format_tables(rows: list[dict[str, Any]], classes: list[str]) -> str:
    """Summary (mean over seeds, per-seed values) and per-class IoU tables in Markdown."""
    lines = ["| recipe | mask mIoU | pseudo-label mIoU | per seed (mask / pseudo) | max class cover | s/step |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        seeds = ", ".join(f"{m:.3f} / {p:.3f}" for m, p in zip(r["mask_per_seed"], r["pseudo_per_seed"], strict=True))
        lines.append(f"| {r['name']} | {r['mask_miou']:.3f} | {r['pseudo_miou']:.3f} | {seeds} | "
                     f"{r['max_pseudo_cover']:.2f} ({r['max_cover_class']}) | {r['s_per_step']:.2f} |")
    names = ["background", *classes]
    lines += ["", "Per-class IoU, mask / pseudo-label (mean over seeds):", "",
              "| recipe | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in rows:
        cells = [f"{r['mask_iou'][n]:.2f} / {r['pseudo_iou'][n]:.2f}" for n in names]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], classes: list[str]) -> Path:
    """quality.json, quality.md and quality.png of the recipes done so far, atomically; returns the folder they are
    in: `out`, or a rescue folder (warned) when `out` stops taking them, where the later recipes go too."""
    from deal_ros.lab.plots import plot_quality

    rows = report["recipes"]
    header = (f"# deal-ros quality benchmark\n\n{report['source']}: {report['train_frames']} training / "
              f"{report['val_frames']} held-out frames, {report['steps']} steps at {report['size'][0]}x"
              f"{report['size'][1]}, seeds {report['seeds']}, weights: {report['weights']}; recipes done: "
              f"{report['recipes_done']}. Mask mIoU: segmentation head, no tags. Pseudo-label mIoU: CAMs + tags, "
              "255 = background. Max class cover: the largest mean fraction of the frame a class's pseudo-label "
              "covers in the frames tagged with it.\n\n")
    written = write_or_rescue(out, {
        "quality.json": lambda p: atomic_write_text(p, json.dumps(report, indent=1)),
        "quality.md": lambda p: atomic_write_text(p, header + format_tables(rows, classes)
                                                  + "\n\n![quality](quality.png)\n"),
        "quality.png": lambda p: plot_quality(rows, classes, p),
    })
    if written.rescued:
        LOG.warning("cannot write the report into %s (%s): the recipes done so far, and those to come, are in %s",
                    out, written.failure, written.folder)
    return written.folder


def run(args: argparse.Namespace) -> int:
    from deal_ros.config import DealRosConfig
    from deal_ros.lab.experiment import run_arm
    from deal_ros.lab.recipes import resolve_weights
    from deal_ros.lab.synthetic import MIN_IMAGE_SIDE

    if args.steps < 1 or args.train_frames < 1 or args.val_frames < 1 or args.eval_every < 0:
        raise UserError("need --steps >= 1, --train-frames >= 1, --val-frames >= 1 and --eval-every >= 0")
    if not all(MIN_IMAGE_SIDE <= side <= MAX_SCENE_SIDE for side in args.scene_size):
        raise UserError(f"--scene-size {' '.join(map(str, args.scene_size))}: height and width must be "
                        f"{MIN_IMAGE_SIDE} to {MAX_SCENE_SIDE} pixels")
    recipes = [parse_recipe(spec) for spec in dict.fromkeys(args.recipes)]
    classes = _classes(args)
    height, width = args.size
    weights = resolve_weights(args.weights)
    base = DealRosConfig(classes=classes).updated({"model.input_height": height, "model.input_width": width,
                                                "model.pretrained_path": weights,
                                                **parse_overrides(args.overrides)})
    configs = {name: {seed: base.updated({**overrides, "train.seed": seed}) for seed in args.seeds}
               for name, overrides in recipes}  # every recipe validated before any training
    out = check_output_dir(args.out, "--out folder")  # read-only or misnamed: refused before any training
    check_free_space(out, REPORT_BYTES, "--out folder", "the report")
    train, val, source = _frames(args, classes, base.depth.float_unit)
    LOG.info("%s: %d training / %d held-out frames; %d recipes x %d seeds x %d steps at %dx%d", source, len(train),
             len(val), len(recipes), len(args.seeds), args.steps, height, width)
    start = time.perf_counter()
    rows = []
    names = ["background", *classes]
    for name, overrides in recipes:
        results = []
        for seed in args.seeds:
            result, _ = run_arm(name, configs[name][seed], train, val, args.steps, pseudo_on_eval=True,
                                evaluate_every=args.eval_every)
            LOG.info("%s seed %d: mask mIoU %.3f, pseudo-label mIoU %.3f (%.2f s/step)", name, seed,
                     result.mask_miou, result.pseudo_miou, result.mean_step_time_s)
            results.append(result)
        cover = {c: float(np.mean([r.pseudo_cover.get(c, 0.0) for r in results])) for c in classes}
        worst = max(cover, key=cover.__getitem__)
        rows.append({
            "name": name, "overrides": overrides,
            "mask_miou": float(np.mean([r.mask_miou for r in results])),
            "pseudo_miou": float(np.mean([r.pseudo_miou for r in results])),
            "mask_per_seed": [r.mask_miou for r in results], "pseudo_per_seed": [r.pseudo_miou for r in results],
            "mask_iou": {n: float(np.mean([r.mask_iou[n] for r in results])) for n in names},
            "pseudo_iou": {n: float(np.mean([r.pseudo_iou[n] for r in results])) for n in names},
            "pseudo_cover": cover, "max_pseudo_cover": cover[worst], "max_cover_class": worst,
            "s_per_step": float(np.mean([r.mean_step_time_s for r in results])),
            "curves": [r.curve for r in results],
        })
        out = write_report(out, {"source": source, "steps": args.steps, "seeds": args.seeds, "size": [height, width],
                                 "weights": weights or "random init", "train_frames": len(train),
                                 "val_frames": len(val), "wall_time_s": time.perf_counter() - start,
                                 "recipes_done": f"{len(rows)} of {len(recipes)}", "recipes": rows}, classes)
    print(format_tables(rows, classes))
    print(f"\nreport: {out / 'quality.md'}, {out / 'quality.json'}, {out / 'quality.png'}")
    return 0
