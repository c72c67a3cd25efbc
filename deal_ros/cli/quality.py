"""`deal-ros bench quality`: label quality of training recipes per scene family, same budget, seeds and data.

Each recipe (a named set of config overrides on top of the package defaults) is trained for --steps
from each seed on the same training frames, then scored on held-out frames the recipe never saw:
mask mIoU (the segmentation head, no tags: what a planner gets) and pseudo-label mIoU (CAMs + the
frame's tags, 255 counted as background: what `deal-ros label` writes), per class, with a learning
curve every --eval-every steps; and, for both, the label-quality shares of deal_ros.labels.metrics.LabelQuality:
objects vs background IoU (any class), right class (of the object pixels found, the share with the right class),
right class with merged groups (the same, classes the training tags cannot tell apart counting as one), wrong
class (on frames with two or more tagged objects, the share of object pixels given another tagged class) and
background as object (the share of frames whose background labelled as an object exceeds 10 % of their object
area: a tray's or shelf's walls standing out).

Data: built-in scene families (--scenes, one or more, or 'all'; default closeup), each generated once per run from
its own training and held-out seeds (deal_ros.lab.synthetic.make_family_scenes): closeup (one or two objects
covering 8-35 % of the frame, 8 classes), tabletop (small objects, 3 classes), clutter (2-5 objects of 0.5-3 % each,
in contact), bin (2-5 touching objects in a tray or box), shelf (a shelf cell from the front, objects hidden in
part) and no_plane (objects held in front of furniture, or on a cloth in folds). Or your own data: --bag/--gt-dir
(masks named by frame index 000012.png or by colour stamp in ns) or --folder with rgb/, depth/ and gt/ subfolders;
tags from the ground truth. With --val-bag/--val-gt (--val-folder) the recipes are scored on that held-out data;
without, on the training frames themselves (the "label my own bag" use: the report says so). Class names: --classes,
or else a classes.txt (one name a line) or an index.json (a "classes" list) in the ground-truth folder or the
folder above it; a leading "background" entry is dropped.

Writes to --out: quality.json (everything), quality.md (tables) and quality.png (mIoU per family and recipe,
and the learning curves), atomically, after every recipe (quality.json says which are done), so that a
stopped or failed run keeps every recipe that finished. The folder is checked (writable, some room)
before anything trains; a folder that stops taking the files mid-run is replaced by a rescue folder
that the log names.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from deal_ros.cli import UserError, add_set_argument
from deal_ros.config.loading import parse_overrides
from deal_ros.lab.recipes import DEFAULT_RECIPES, RECIPES, parse_recipe
from deal_ros.storage.files import check_free_space, check_output_dir

LOG = logging.getLogger("deal_ros.quality")


MAX_SCENE_SIDE = 4096
"""Largest height and width of a built-in scene: the largest network input (model.input_height/width); beyond it
a scene only costs memory (100000x100000 needs 75 GiB)."""

REPORT_BYTES = 5_000_000
"""About what the report files take (the PNG and the JSON with the learning curves), for the free-space check."""

SCENES = {
    "closeup": {"train_seed": 100, "val_seed": 200},
    "tabletop": {"train_seed": 300, "val_seed": 400},
    "clutter": {"train_seed": 500, "val_seed": 600},
    "bin": {"train_seed": 700, "val_seed": 800},
    "shelf": {"train_seed": 900, "val_seed": 1000},
    "no_plane": {"train_seed": 1100, "val_seed": 1200},
}
"""Built-in scene families (deal_ros.lab.synthetic.FAMILIES) and the seeds of their training and held-out frames."""

QUALITY_KEYS = ("objects_iou", "right_class", "right_group", "wrong_class", "background_as_object")
"""LabelQuality shares reported for masks and pseudo-labels (rows' mask_quality / pseudo_quality)."""

CLASS_FILES = ("classes.txt", "index.json")
"""Where own data's class names are read from when --classes is not given (the gt folder, then the one above)."""


@dataclass
class DataSet:
    """One family's frames: what the recipes train on and are scored on, with their class names."""

    family: str
    classes: list[str]
    source: str
    train: list[Any]
    val: list[Any]


def register(which: argparse._SubParsersAction) -> None:
    parser = which.add_parser("quality", help="label quality of recipes on held-out scenes (mIoU per class)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=list(DEFAULT_RECIPES), metavar="RECIPE",
                        help=f"named recipes from {sorted(RECIPES)} or NAME:KEY=VALUE,... (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=300, help="training steps per recipe (default: %(default)s)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default: %(default)s)")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 160), metavar=("H", "W"),
                        help="network input size (default: %(default)s)")
    parser.add_argument("--scenes", nargs="+", choices=[*SCENES, "all"], metavar="FAMILY",
                        help=f"built-in scene families, one or more of {', '.join(SCENES)}, or all (default: closeup)")
    parser.add_argument("--train-frames", type=int, default=120, help="built-in training scenes (default: 120)")
    parser.add_argument("--val-frames", type=int, default=48, help="built-in held-out scenes (default: 48)")
    parser.add_argument("--scene-size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"),
                        help="camera resolution of the built-in scenes (default: %(default)s)")
    parser.add_argument("--eval-every", type=int, default=100, help="learning-curve period in steps (0 = end only)")
    parser.add_argument("--weights", default="auto", help="backbone weights as for `deal-ros demo` (default: builtin)")
    parser.add_argument("--classes", help="comma-separated class names for your own data (default: from a "
                        "classes.txt or index.json in the ground-truth folder or the one above)")
    parser.add_argument("--bag", help="training bag (ground truth in --gt-dir)")
    parser.add_argument("--gt-dir", help="ground-truth masks of --bag")
    parser.add_argument("--val-bag", help="held-out bag (ground truth in --val-gt; default: score on --bag itself)")
    parser.add_argument("--val-gt", help="ground-truth masks of --val-bag")
    parser.add_argument("--folder", help="training folder with rgb/, depth/, gt/")
    parser.add_argument("--val-folder", help="held-out folder with rgb/, depth/, gt/ (default: score on --folder)")
    add_set_argument(parser, "config override for every recipe, e.g. --set train.batch_size=4")
    parser.add_argument("--out", default="quality_out", help="output folder (default: %(default)s)")
    parser.set_defaults(func=run)


def _families(args: argparse.Namespace) -> list[str]:
    """The built-in families asked for, in SCENES order, or [] for own data."""
    own = args.bag or args.folder
    if own and args.scenes:
        raise UserError("--scenes is for the built-in scenes; your own data (--bag, --folder) is one set")
    if args.bag and not args.gt_dir:
        raise UserError("--bag needs --gt-dir with its ground-truth masks")
    if own:
        return []
    asked = args.scenes or ["closeup"]
    return list(SCENES) if "all" in asked else [f for f in SCENES if f in asked]


def classes_from_index(gt_dir: str | Path) -> list[str] | None:
    """Class names of a ground-truth folder: classes.txt (one a line) or index.json ("classes") in it or the
    folder above it; a leading "background" entry is dropped. None when there is no such file."""
    root = Path(gt_dir).resolve()
    for folder in (root, root.parent):
        for name in CLASS_FILES:
            path = folder / name
            if not path.is_file():
                continue
            try:
                if name.endswith(".json"):
                    names = json.loads(path.read_text())["classes"]
                else:
                    names = path.read_text().splitlines()
            except (KeyError, TypeError, ValueError) as exc:
                raise UserError(f"{path}: cannot read class names ({exc})") from None
            names = [str(n).strip() for n in names if str(n).strip()]
            if names and names[0].lower() == "background":
                names = names[1:]
            if not names:
                raise UserError(f"{path} names no classes")
            return names
    return None


def _classes(args: argparse.Namespace, family: str | None) -> list[str]:
    """Class names of a built-in family (or of own data when family is None)."""
    if args.classes:
        return [c.strip() for c in args.classes.split(",") if c.strip()]
    if family is None:
        gt_dir = args.gt_dir or str(Path(args.folder) / "gt")
        names = classes_from_index(gt_dir)
        if names is None:
            raise UserError("your own data needs --classes (in the order of the ground-truth ids 1, 2, ...) or a "
                            f"classes.txt / index.json in {gt_dir} or the folder above it")
        return names
    from deal_ros.lab.synthetic import CLOSEUP_CLASSES, DEFAULT_CLASSES

    return list(DEFAULT_CLASSES if family == "tabletop" else CLOSEUP_CLASSES)


def _own_data(args: argparse.Namespace, classes: list[str], depth_float_unit: str) -> DataSet:
    from deal_ros.io.ground_truth import load_bag, load_folder

    size = tuple(args.size)
    if args.bag:
        if bool(args.val_bag) != bool(args.val_gt):
            raise UserError("--val-bag and --val-gt go together (held-out frames and their ground truth)")
        train = load_bag(args.bag, args.gt_dir, size, classes, 10**9, depth_float_unit)
        if args.val_bag:
            val, source = (load_bag(args.val_bag, args.val_gt, size, classes, 10**9, depth_float_unit),
                           f"{args.bag} -> {args.val_bag}")
        else:
            val, source = train, f"{args.bag}, scored on its own frames"
        family = "bag"
    else:
        train = load_folder(args.folder, size, classes)
        if args.val_folder:
            val, source = load_folder(args.val_folder, size, classes), f"{args.folder} -> {args.val_folder}"
        else:
            val, source = train, f"{args.folder}, scored on its own frames"
        family = "folder"
    return DataSet(family, classes, source, train, val)


def _built_in(args: argparse.Namespace, family: str, classes: list[str]) -> DataSet:
    from deal_ros.lab.synthetic import make_family_scenes

    seeds = SCENES[family]
    height, width = args.scene_size
    train = make_family_scenes(family, args.train_frames, height, width, classes, seed=seeds["train_seed"])
    val = make_family_scenes(family, args.val_frames, height, width, classes, seed=seeds["val_seed"])
    source = (f"built-in {family} scenes {height}x{width} (train seed {seeds['train_seed']}, held-out seed "
              f"{seeds['val_seed']})")
    return DataSet(family, classes, source, train, val)


def _mean(values: list[float]) -> float | None:
    """Mean of the finite values (None when there is none: nothing was counted)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _cell(mask: float | None, pseudo: float | None) -> str:
    return " / ".join("n/a" if v is None else f"{v:.2f}" for v in (mask, pseudo))


def format_tables(rows: list[dict[str, Any]], classes: dict[str, list[str]]) -> str:
    """Summary (family x recipe: mean over seeds, per-seed values, label-quality shares) and per-class IoU tables
    (one per family; `classes` by family) in Markdown."""
    lines = ["| family | recipe | mask mIoU | pseudo-label mIoU | per seed (mask / pseudo) | objects IoU | right class "
             "| right class, merged groups count | wrong class | bg as object | max class cover | s/step |",
             "|---" * 12 + "|"]
    for r in rows:
        seeds = ", ".join(f"{m:.3f} / {p:.3f}" for m, p in zip(r["mask_per_seed"], r["pseudo_per_seed"], strict=True))
        shares = " | ".join(_cell(r["mask_quality"][k], r["pseudo_quality"][k]) for k in QUALITY_KEYS)
        lines.append(f"| {r['family']} | {r['name']} | {r['mask_miou']:.3f} | {r['pseudo_miou']:.3f} | {seeds} | "
                     f"{shares} | {r['max_pseudo_cover']:.2f} ({r['max_cover_class']}) | {r['s_per_step']:.2f} |")
    lines += ["", "Label-quality cells are mask / pseudo-label; n/a: nothing to count (e.g. no frame with two "
              "tagged objects)."]
    groups = {(r["family"], tuple(map(tuple, r.get("indistinct_classes") or []))) for r in rows}
    for family, family_groups in sorted(groups):
        if family_groups:
            lines.append(f"Classes the training tags cannot tell apart on {family} (merged groups): "
                         + "; ".join("{" + ", ".join(g) + "}" for g in family_groups) + ".")
    for family, names in classes.items():
        names = ["background", *names]
        lines += ["", f"Per-class IoU on {family}, mask / pseudo-label (mean over seeds):", "",
                  "| recipe | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
        for r in rows:
            if r["family"] == family:
                cells = [f"{r['mask_iou'][n]:.2f} / {r['pseudo_iou'][n]:.2f}" for n in names]
                lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], classes: dict[str, list[str]]) -> Path:
    """quality.json, quality.md and quality.png of the recipes done so far (deal_ros.lab.reports.write_report);
    returns the folder they are in."""
    from deal_ros.lab.plots import plot_quality
    from deal_ros.lab.reports import write_report as write_files

    rows = report["recipes"]
    header = (f"# deal-ros quality benchmark\n\n{report['source']}: {report['train_frames']} training / "
              f"{report['val_frames']} held-out frames, {report['steps']} steps at {report['size'][0]}x"
              f"{report['size'][1]}, seeds {report['seeds']}, weights: {report['weights']}; recipes done: "
              f"{report['recipes_done']}. Mask mIoU: segmentation head, no tags. Pseudo-label mIoU: CAMs + tags, "
              "255 = background. Objects IoU: any object vs background. Right class: of the object pixels found, "
              "the share with the right class; merged groups count: a class tagged in exactly the same training "
              "frames as the right one counts as right. Wrong class: on frames with two or more tagged objects, the "
              "share of object pixels given another tagged class. Bg as object: the share of frames whose background "
              "labelled as an object exceeds 10 % of their object area. Max class cover: the largest mean fraction "
              "of the frame a class's pseudo-label covers in the frames tagged with it.\n\n")
    markdown = header + format_tables(rows, classes) + "\n\n![quality](quality.png)\n"
    return write_files(out, "quality", report, markdown, "quality.png", lambda p: plot_quality(rows, p), "recipes")


def _row(family: str, name: str, overrides: dict[str, Any], results: list[Any], classes: list[str]) -> dict[str, Any]:
    """One family x recipe line of the report: means over seeds, per-seed values, curves."""
    names = ["background", *classes]
    cover = {c: float(np.mean([r.pseudo_cover.get(c, 0.0) for r in results])) for c in classes}
    worst = max(cover, key=cover.__getitem__)
    return {
        "family": family, "name": name, "overrides": overrides,
        "mask_miou": float(np.mean([r.mask_miou for r in results])),
        "pseudo_miou": float(np.mean([r.pseudo_miou for r in results])),
        "mask_per_seed": [r.mask_miou for r in results], "pseudo_per_seed": [r.pseudo_miou for r in results],
        "mask_iou": {n: float(np.mean([r.mask_iou[n] for r in results])) for n in names},
        "pseudo_iou": {n: float(np.mean([r.pseudo_iou[n] for r in results])) for n in names},
        "mask_quality": {k: _mean([r.mask_quality[k] for r in results]) for k in QUALITY_KEYS},
        "pseudo_quality": {k: _mean([r.pseudo_quality[k] for r in results]) for k in QUALITY_KEYS},
        "pseudo_cover": cover, "max_pseudo_cover": cover[worst], "max_cover_class": worst,
        "s_per_step": float(np.mean([r.mean_step_time_s for r in results])),
        "indistinct_classes": results[0].indistinct_classes,
        "curves": [r.curve for r in results],
    }


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
    families: list[str | None] = list(_families(args)) or [None]
    classes = {family: _classes(args, family) for family in families}
    height, width = args.size
    weights = resolve_weights(args.weights)
    overrides = parse_overrides(args.overrides)
    configs = {}
    for family in families:  # every family's and recipe's config validated before any training
        base = DealRosConfig(classes=classes[family]).updated({
            "model.input_height": height, "model.input_width": width, "model.pretrained_path": weights, **overrides})
        configs[family] = {name: {seed: base.updated({**recipe, "train.seed": seed}) for seed in args.seeds}
                           for name, recipe in recipes}
    out = check_output_dir(args.out, "--out folder")  # read-only or misnamed: refused before any training
    check_free_space(out, REPORT_BYTES, "--out folder", "the report")
    start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    sources: list[str] = []
    done_classes: dict[str, list[str]] = {}
    for family in families:
        float_unit = configs[family][recipes[0][0]][args.seeds[0]].depth.float_unit
        data = (_own_data(args, classes[family], float_unit) if family is None
                else _built_in(args, family, classes[family]))
        if not data.train or not data.val:
            raise UserError(f"need labelled training and held-out frames, found {len(data.train)} and "
                            f"{len(data.val)}")
        LOG.info("%s: %d training / %d held-out frames; %d recipes x %d seeds x %d steps at %dx%d", data.source,
                 len(data.train), len(data.val), len(recipes), len(args.seeds), args.steps, height, width)
        sources.append(data.source)
        done_classes[data.family] = data.classes
        for name, recipe in recipes:
            results = []
            for seed in args.seeds:
                result, _ = run_arm(name, configs[family][name][seed], data.train, data.val, args.steps,
                                    pseudo_on_eval=True, evaluate_every=args.eval_every)
                LOG.info("%s %s seed %d: mask mIoU %.3f, pseudo-label mIoU %.3f (%.2f s/step)", data.family, name,
                         seed, result.mask_miou, result.pseudo_miou, result.mean_step_time_s)
                results.append(result)
            rows.append(_row(data.family, name, recipe, results, data.classes))
            out = write_report(out, {"source": "; ".join(sources), "steps": args.steps, "seeds": args.seeds,
                                     "size": [height, width], "weights": weights or "random init",
                                     "train_frames": len(data.train), "val_frames": len(data.val),
                                     "families": {f: {"source": s, "classes": done_classes[f]}
                                                  for f, s in zip(done_classes, sources, strict=True)},
                                     "wall_time_s": time.perf_counter() - start,
                                     "recipes_done": f"{len(rows)} of {len(recipes) * len(families)}",
                                     "recipes": rows}, done_classes)
    print(format_tables(rows, done_classes))
    print(f"\nreport: {out / 'quality.md'}, {out / 'quality.json'}, {out / 'quality.png'}")
    return 0
