"""`deal-ros ablate`: train the same model, data, seed and budget once per loss set and compare.

A loss set is '+'-joined tokens starting with 'cls' (the classification loss, always on):
deal (DEAL, the depth-edge alignment loss), isl, fsl, smooth (boundary-guided smoothness, S = depth edges),
smooth-pl (S = pseudo-label boundaries), boundary (semantic boundary branch + smoothness with the
learned S), ssc (SSC self-modulation + reconstruction), ssc-sm / recon (either alone). Everything not
named is off. Each set trains with deal_ros.lab.experiment.run_arm on the same frames from the same seed.

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
import logging
import time
from pathlib import Path
from typing import Any

from deal_ros.cli import UserError, add_set_argument
from deal_ros.config import DealRosConfig
from deal_ros.config.loading import parse_overrides
from deal_ros.io.ground_truth import GroundTruthFrame, load_bag, load_folder
from deal_ros.lab.recipes import DEFAULT_SETS, REFERENCE_SET, TOKENS, set_overrides
from deal_ros.online.parameters import load_parameter_file
from deal_ros.storage.files import check_free_space, check_output_dir

LOG = logging.getLogger("deal_ros.ablate")

REPORT_BYTES = 5_000_000
"""About what the report files take (the JSON holds every set's loss history), for the free-space check."""


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


def _base_config(args: argparse.Namespace) -> DealRosConfig:
    from deal_ros.lab.recipes import demo_config, resolve_weights

    height, width = args.size
    args.weights = resolve_weights(args.weights)
    base = load_parameter_file(args.config) if args.config else demo_config(height, width, args.weights, args.seed)
    overrides: dict[str, Any] = {"model.input_height": height, "model.input_width": width, "train.seed": args.seed}
    if args.classes:
        overrides["classes"] = [c.strip() for c in args.classes.split(",") if c.strip()]
    return base.updated({**overrides, **parse_overrides(args.overrides)})


def _frames(args: argparse.Namespace, base: DealRosConfig) -> tuple[list[GroundTruthFrame], list[Any]]:
    from deal_ros.lab.synthetic import make_closeup_scenes

    height, width = args.size
    size = (height, width)
    total = args.train_frames + args.eval_frames
    if args.folder:
        frames: list[Any] = load_folder(args.folder, size, base.classes)
    elif args.bag:
        if not args.gt_dir:
            raise UserError("--bag needs --gt-dir with the ground-truth masks")
        frames = load_bag(args.bag, args.gt_dir, size, base.classes, total, base.depth.float_unit)
    else:
        frames = make_closeup_scenes(total, height, width, base.classes, seed=args.seed)
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
    """ablation.json, ablation.md and ablation_miou.png of the sets done so far (deal_ros.lab.reports.write_report);
    returns the folder they are in."""
    from deal_ros.lab.plots import plot_bars
    from deal_ros.lab.reports import write_report as write_files

    header = (f"# deal-ros ablation\n\n{report['train_frames']} training / {report['eval_frames']} held-out frames "
              f"({report['source']}) at {report['size'][0]}x{report['size'][1]}, {report['steps']} steps per set, "
              f"seed {report['seed']}, weights: {report['weights'] or 'random init'}; sets done: "
              f"{report['sets_done']}. Step times are wall-clock means over all steps.\n\n")
    table = format_table(report["sets"], report["reference"])
    return write_files(out, "ablation", report, header + table + "\n\n![mIoU](ablation_miou.png)\n",
                       "ablation_miou.png", lambda p: plot_bars(results, p), "sets")


def run(args: argparse.Namespace) -> int:
    from deal_ros.lab.experiment import run_arm

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
