"""Training-step time (240x320, batch 8), DEAL on and off, for this tree and a baseline, interleaved in one run.

    python scripts/bench_train_step.py --before 87292d0 \
        --before-paths deal_ros/filters.py deal_ros/depth.py deal_ros/models/mobilenet_v2.py

Arms: {this tree, the baseline} x {DEAL off (cls + seg only), DEAL on}. The baseline is the git ref --before;
with --before-paths it is this working tree with only those paths as at the ref, which isolates a change from
everything else that moved since. Each arm is a worker process holding one trainer fed the same frames (made
once here); after --warmup untimed steps, every round runs --steps steps in each arm, the order rotating from
round to round, so load from other processes spreads over all arms. Only one arm runs at a time.

Prints s/step per arm (wall and the worker's CPU time), the after/before ratios, DEAL's overhead over a
cls-only step in each tree (target <= 5 %), and the largest relative difference of the losses between the
trees: at step 1 (same weights, same batch; must be <= 1e-4, else exit code 1) and over all steps, where
any change of float rounding grows (AdamW's first updates follow the gradients' signs: the same code on 1
and on 2 threads drifts apart as much).
Timings on a shared machine are noisy: read the ratios, and rerun before trusting one.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
LOSS_TOLERANCE = 1e-4
DEAL_OVERHEAD_TARGET = 0.05
LOSS_KEYS = ("loss", "loss_cls", "loss_deal", "loss_seg")
SHARED_WEIGHTS = REPO.parent / "shared/data/mobilenet_v2_imagenet/mobilenet_v2_imagenet.safetensors"


def default_overrides(height: int, width: int, batch: int, weights: str) -> dict[str, Any]:
    """The issue's setting: ImageNet MobileNetV2 (TF weights: tf input norm, TF 'SAME' padding, frozen BN),
    past DEAL's and the segmentation head's warm-ups, on the CPU."""
    return {"model.pretrained_path": weights, "model.input_norm": "tf", "model.padding": "tf_same",
            "model.freeze_bn": True, "model.input_height": height, "model.input_width": width,
            "train.batch_size": batch, "train.device": "cpu", "loss.deal.warmup_steps": 0,
            "loss.seg_warmup_steps": 0}


# ------------------------------------------------------------------------------------------------
# Worker: one trainer, steps on request (runs with PYTHONPATH = the tree under test)


def worker(frames_path: str, overrides_json: str, tree: str, threads: str) -> None:
    import dataclasses

    import numpy as np
    import torch

    import deal_ros
    from deal_ros.config import DealRosConfig, ModelConfig
    from deal_ros.training.trainer import OnlineTrainer

    if not Path(deal_ros.__file__).resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"worker imported deal_ros from {deal_ros.__file__}, not from {tree}")
    if int(threads) > 0:
        torch.set_num_threads(int(threads))
    overrides = json.loads(overrides_json)
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    if "padding" not in fields and "model.padding" in overrides:  # older trees: a boolean
        overrides["model.tf_same_padding"] = overrides.pop("model.padding") == "tf_same"
    data = np.load(frames_path)
    tags = json.loads(str(data["tags"]))
    trainer = OnlineTrainer(DealRosConfig(classes=json.loads(str(data["classes"]))).updated(overrides))
    for rgb, depth_m, frame_tags in zip(data["rgb"], data["depth_m"], tags, strict=True):
        trainer.add_frame(rgb, depth_m, frame_tags)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        steps = int(line)
        if steps == 0:
            return
        wall, cpu = time.perf_counter(), time.process_time()
        losses = []
        for _ in range(steps):
            stats = trainer.train_step()
            losses.append(None if stats is None else {k: getattr(stats, k) for k in LOSS_KEYS})
        print(json.dumps({"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu,
                          "losses": losses}), flush=True)


# ------------------------------------------------------------------------------------------------
# Parent


def tracked_files(repo: Path) -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    return [p for p in out.splitlines() if (repo / p).is_file()]


def make_baseline(ref: str, paths: list[str], dest: Path) -> Path:
    """The tree at `ref`, or (with paths) this working tree with those paths as at `ref`."""
    dest.mkdir(parents=True, exist_ok=True)
    if not paths:
        archive = subprocess.run(["git", "archive", ref], cwd=REPO, capture_output=True)
        if archive.returncode != 0:
            raise SystemExit(f"--before {ref}: {archive.stderr.decode().strip()}")
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
        return dest
    for rel in tracked_files(REPO):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, dest / rel)
    for rel in paths:
        shown = subprocess.run(["git", "show", f"{ref}:{rel}"], cwd=REPO, capture_output=True)
        if shown.returncode != 0:
            raise SystemExit(f"{rel} is not in {ref}: {shown.stderr.decode().strip()}")
        (dest / rel).write_bytes(shown.stdout)
    return dest


def write_frames(path: Path, count: int, height: int, width: int) -> None:
    import numpy as np

    from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes

    scenes = make_tabletop_scenes(count, height, width, list(DEFAULT_CLASSES), seed=0)
    np.savez(path, rgb=np.stack([s.rgb for s in scenes]), depth_m=np.stack([s.depth_m for s in scenes]),
             tags=json.dumps([list(s.tags) for s in scenes]), classes=json.dumps(list(DEFAULT_CLASSES)))


class Arm:
    def __init__(self, name: str, tree: Path, overrides: dict[str, Any], frames: Path, threads: int) -> None:
        self.name = name
        env = {**os.environ, "PYTHONPATH": str(tree)}
        self.proc = subprocess.Popen([sys.executable, __file__, "--worker", str(frames), json.dumps(overrides),
                                      str(tree), str(threads)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=tree)
        self._read()
        self.wall_s = self.cpu_s = 0.0
        self.steps = 0
        self.losses: list[dict[str, float] | None] = []
        self.round_wall_s: list[float] = []

    def _read(self) -> dict[str, Any]:
        line = self.proc.stdout.readline() if self.proc.stdout else ""
        if not line:
            raise SystemExit(f"worker {self.name} died (exit code {self.proc.wait()})")
        return json.loads(line)

    def run(self, steps: int, timed: bool) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        reply = self._read()
        self.losses += reply["losses"]
        if timed:
            self.wall_s += reply["wall_s"]
            self.cpu_s += reply["cpu_s"]
            self.steps += steps
            self.round_wall_s.append(reply["wall_s"] / steps)

    def close(self) -> None:
        if self.proc.poll() is None and self.proc.stdin is not None:
            self.proc.stdin.write("0\n")
            self.proc.stdin.flush()
        self.proc.wait(timeout=60)


def max_relative_difference(a: list[dict[str, float] | None], b: list[dict[str, float] | None],
                            ) -> tuple[float, str]:
    """Largest |a - b| / max(|a|, |b|) over the steps and loss terms, and where it is."""
    worst, where = 0.0, "-"
    for step, (x, y) in enumerate(zip(a, b, strict=True), start=1):
        if (x is None) != (y is None):
            return float("inf"), f"step {step} skipped in one tree only"
        for key in LOSS_KEYS if x is not None and y is not None else ():
            diff = abs(x[key] - y[key]) / max(abs(x[key]), abs(y[key]), 1e-12)
            if diff > worst:
                worst, where = diff, f"{key} at step {step}: {x[key]:.6g} vs {y[key]:.6g}"
    return worst, where


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", metavar="REF", help="git ref of the baseline (default: no baseline arms)")
    parser.add_argument("--before-paths", nargs="+", default=[], metavar="PATH",
                        help="take only these paths from REF, the rest from this working tree")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=2, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per arm first")
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--weights", default=str(SHARED_WEIGHTS) if SHARED_WEIGHTS.is_file() else "builtin",
                        help="model.pretrained_path (default: shared/'s ImageNet MobileNetV2, else 'builtin')")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", dest="json_out", metavar="FILE")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch threads per worker (default 0: torch's default, one per core); on a machine "
                             "shared with other jobs, 1 avoids threads waiting for each other at every operation")
    parser.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker(*args.worker)
        return 0
    import yaml

    if args.rounds < 1 or args.steps < 1 or args.warmup < 0:
        parser.error("--rounds and --steps must be >= 1, --warmup >= 0")
    if args.weights not in ("builtin", ""):  # checked here: a worker would die with a traceback
        from deal_ros.models.weights import WeightsError, find_weights_file

        try:
            find_weights_file(args.weights)
        except WeightsError as exc:
            parser.error(str(exc))
    overrides = default_overrides(*args.size, args.batch, args.weights)
    for item in args.overrides:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    with tempfile.TemporaryDirectory(prefix="deal_ros_bench_step_") as tmp:
        frames = Path(tmp) / "frames.npz"
        write_frames(frames, args.frames, *args.size)
        trees = {"after": REPO}
        if args.before:
            trees["before"] = make_baseline(args.before, args.before_paths, Path(tmp) / "before")
        arms: list[Arm] = []
        try:
            for tree_name, tree in trees.items():
                for deal in (False, True):
                    arms.append(Arm(f"{tree_name}/{'deal' if deal else 'cls'}", tree,
                                    {**overrides, "loss.deal.enabled": deal}, frames, args.threads))
            for arm in arms:
                if args.warmup:
                    arm.run(args.warmup, timed=False)
            for index in range(args.rounds):
                for arm in arms[index % len(arms):] + arms[: index % len(arms)]:
                    arm.run(args.steps, timed=True)
        finally:
            for arm in arms:
                arm.close()
    return report({a.name: a for a in arms}, args, overrides)


def report(arms: dict[str, Arm], args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    baseline = f"{args.before}" + (f" with only {', '.join(args.before_paths)} from it" if args.before_paths else "")
    threads = args.threads or "default"
    print(f"{args.size[0]}x{args.size[1]}, batch {args.batch}, {threads} torch threads, weights {args.weights}; "
          f"{args.rounds} rounds x "
          f"{args.steps} timed steps per arm after {args.warmup} warm-up steps; baseline: {baseline or 'none'}")
    print(f"{'arm':<12} {'s/step wall':>11} {'s/step CPU':>11}  per-round s/step")
    for name, arm in arms.items():
        rounds = " ".join(f"{t:.3f}" for t in arm.round_wall_s)
        print(f"{name:<12} {arm.wall_s / arm.steps:>11.3f} {arm.cpu_s / arm.steps:>11.3f}  {rounds}")
    result: dict[str, Any] = {"overrides": overrides, "arms": {
        n: {"wall_s_per_step": a.wall_s / a.steps, "cpu_s_per_step": a.cpu_s / a.steps,
            "round_wall_s_per_step": a.round_wall_s} for n, a in arms.items()}}
    for tree in ("after", "before"):
        if f"{tree}/cls" in arms:
            cls, deal = arms[f"{tree}/cls"], arms[f"{tree}/deal"]
            overhead = deal.wall_s / cls.wall_s - 1.0
            overhead_cpu = deal.cpu_s / cls.cpu_s - 1.0
            verdict = "OK" if overhead <= DEAL_OVERHEAD_TARGET else "ABOVE TARGET"
            print(f"DEAL overhead over a cls-only step, {tree}: {overhead * 100:+.1f} % wall, "
                  f"{overhead_cpu * 100:+.1f} % CPU (target <= {DEAL_OVERHEAD_TARGET * 100:.0f} %): {verdict}")
            result[f"deal_overhead_{tree}"] = overhead
    status = 0
    if "before/cls" in arms:
        for kind in ("cls", "deal"):
            after, before = arms[f"after/{kind}"], arms[f"before/{kind}"]
            speedup = before.wall_s / after.wall_s
            print(f"speed-up after vs before, DEAL {'on' if kind == 'deal' else 'off'}: {speedup:.2f}x wall, "
                  f"{before.cpu_s / after.cpu_s:.2f}x CPU")
            first, where_first = max_relative_difference(after.losses[:1], before.losses[:1])
            same = first <= LOSS_TOLERANCE
            print(f"  losses of step 1 (same weights, same batch): largest relative difference {first:.2e} "
                  f"({where_first}; tolerance {LOSS_TOLERANCE:g}): {'same' if same else 'DIFFERENT'}")
            drift, where = max_relative_difference(after.losses, before.losses)
            print(f"  over all {len(after.losses)} steps: {drift:.2e} ({where}); AdamW's first steps follow the "
                  "gradients' signs, so rounding differences grow step by step (1 vs 2 threads does the same)")
            result[f"speedup_{kind}"] = speedup
            result[f"loss_step1_max_rel_diff_{kind}"] = first
            result[f"loss_all_steps_max_rel_diff_{kind}"] = drift
            status |= 0 if same else 1
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(result, indent=1))
    return status


if __name__ == "__main__":
    sys.exit(main())
