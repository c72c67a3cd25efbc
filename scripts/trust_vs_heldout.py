"""The trust signal against the truth: the head's agreement with its pseudo-labels vs held-out mask mIoU, over steps.

Trains the default recipe on built-in close-up scenes (the `bench quality` seeds: training 100, held-out 200) and
records, every step, the segmentation head's agreement with the batch's pseudo-labels (StepStats.head_agreement,
head_pixel_agreement), and every --eval-every steps the mask mIoU on held-out scenes (no tags: what a planner gets).
Then it replays the trust rule (deal_ros.training.trust) over the recorded agreements for a range of
trust.min_agreement values and prints, for each, the step at which the masks became trusted next to the first
step whose held-out mask mIoU reached --target (0.6), and the held-out mIoU at the trusted step: the threshold to
choose is the one whose trusted step follows the target step closely without coming before it.

    python scripts/trust_vs_heldout.py --size 96 128 --train-scenes 96 --steps 300 --val-scenes 24 --json t.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--size", type=int, nargs=2, default=[128, 160], metavar=("H", "W"),
                        help="network input (and scene) size, H W (default 128 160)")
    parser.add_argument("--train-scenes", type=int, default=120)
    parser.add_argument("--val-scenes", type=int, default=48)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--target", type=float, default=0.6, help="held-out mask mIoU the trust should mean")
    parser.add_argument("--thresholds", type=float, nargs="+",
                        default=[0.35, 0.4, 0.45, 0.5, 0.52, 0.55, 0.6, 0.7])
    parser.add_argument("--json", type=Path, default=None, help="write the curves and the table here")
    return parser.parse_args(argv)


def run_seed(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    """One training run: per-step agreements and the held-out mask mIoU curve."""
    from deal_ros.config import DealRosConfig
    from deal_ros.inference.segmenter import Segmenter
    from deal_ros.lab.synthetic import CLOSEUP_CLASSES, make_closeup_scenes
    from deal_ros.labels.evaluation import evaluate
    from deal_ros.training.trainer import OnlineTrainer

    height, width = args.size
    train = make_closeup_scenes(args.train_scenes, height, width, seed=100)
    held_out = make_closeup_scenes(args.val_scenes, height, width, seed=200)
    cfg = DealRosConfig(classes=list(CLOSEUP_CLASSES)).updated({
        "model.input_height": height, "model.input_width": width, "train.device": "cpu", "train.seed": seed})
    trainer = OnlineTrainer(cfg)
    for frame in train:
        trainer.add_frame(frame.rgb, frame.depth_m, frame.tags)
    steps: list[dict[str, Any]] = []
    curve: list[dict[str, Any]] = []
    start = time.perf_counter()
    while trainer.step < args.steps:
        stats = trainer.train_step()
        if stats is None:
            continue
        steps.append({"step": stats.step, "head_agreement": stats.head_agreement,
                      "head_pixel_agreement": stats.head_pixel_agreement, "trust_agreement": stats.trust_agreement,
                      "masks_trusted": stats.masks_trusted, "loss_seg": stats.loss_seg})
        if stats.step % args.eval_every == 0 or stats.step == args.steps:
            result = evaluate(cfg, Segmenter(cfg, trainer.model, model_lock=trainer.model_lock), [], held_out)
            curve.append({"step": stats.step, "mask_miou": round(result.masks.miou(), 4)})
            print(f"seed {seed} step {stats.step}: agreement {stats.trust_agreement or 0:.3f} (batch "
                  f"{stats.head_agreement or 0:.3f}, pixels {stats.head_pixel_agreement or 0:.3f}), trusted "
                  f"{stats.masks_trusted}, held-out mask mIoU {curve[-1]['mask_miou']:.3f} "
                  f"({time.perf_counter() - start:.0f} s, load {os.getloadavg()[0]:.2f})", flush=True)
            if args.json is not None:  # what is measured so far survives a run stopped early
                args.json.with_suffix(".partial.json").write_text(json.dumps({"seed": seed, "steps": steps,
                                                                              "heldout": curve}))
    return {"seed": seed, "steps": steps, "heldout": curve}


def replay(steps: list[dict[str, Any]], min_agreement: float) -> int | None:
    """The step at which the trust rule with this threshold (other trust.* at their defaults) first trusts."""
    from deal_ros.config import TrustConfig
    from deal_ros.training.trust import TrustTracker

    cfg = TrustConfig(min_agreement=min_agreement)
    tracker = TrustTracker()
    for point in steps:
        tracker.update(point["step"], point["head_agreement"], cfg)
        if tracker.trusted:
            return int(point["step"])
    return None


def heldout_at(curve: list[dict[str, Any]], step: int | None) -> float | None:
    """Held-out mask mIoU at the last evaluation at or before `step`."""
    if step is None:
        return None
    before = [p["mask_miou"] for p in curve if p["step"] <= step]
    return before[-1] if before else None


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    runs = [run_seed(args, seed) for seed in args.seeds]
    table = []
    for run in runs:
        reached = next((p["step"] for p in run["heldout"] if p["mask_miou"] >= args.target), None)
        batch = [(p["step"], p["head_agreement"]) for p in run["steps"] if p["head_agreement"] is not None]
        heldout = {p["step"]: p["mask_miou"] for p in run["heldout"]}
        smoothed = {p["step"]: p["trust_agreement"] for p in run["steps"]}
        pairs = [(smoothed[s], m) for s, m in heldout.items() if smoothed.get(s) is not None]
        corr = float(np.corrcoef(np.array(pairs).T)[0, 1]) if len(pairs) > 2 else float("nan")
        print(f"\nseed {run['seed']}: held-out mask mIoU first >= {args.target} at step {reached}; "
              f"{len(batch)} steps with pseudo-labels; correlation of smoothed agreement and held-out mIoU "
              f"{corr:.3f}")
        for threshold in args.thresholds:
            trusted = replay(run["steps"], threshold)
            row = {"seed": run["seed"], "min_agreement": threshold, "trusted_step": trusted,
                   "target_step": reached, "heldout_at_trusted": heldout_at(run["heldout"], trusted)}
            table.append(row)
            print(f"  min_agreement {threshold:.2f}: trusted at step {trusted}, held-out mask mIoU there "
                  f"{row['heldout_at_trusted']}")
    if args.json is not None:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "runs": runs,
                                         "table": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
