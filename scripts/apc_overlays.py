#!/usr/bin/env python3
"""The default recipe on real RealSense frames: support plane, pseudo-labels and masks on the APC shelf sample.

Why: synthetic depth flatters depth cues. The APC 2016 sample (../shared/data/apc2016_shelf_sample: 15 views of
one shelf bin, 4 objects, the same 4 tags in every frame) has real sensor holes and noise but no ground truth,
so this script trains the default recipe on its frames and writes overlays to look at, plus one number that is
NOT a quality measure: how much of the toolbox's own FCN foreground (segm/, an upstream model's output, not
human labels) the support plane calls "stands out" and how much of the FCN background it calls background.

Usage: python scripts/apc_overlays.py [--data ../shared/data/apc2016_shelf_sample] [--steps 150] [--out apc_out]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

from deal_ros.config import DealRosConfig
from deal_ros.errors import DealRosError, one_line
from deal_ros.inference.segmenter import Segmenter
from deal_ros.labels.colors import colorize, overlay
from deal_ros.labels.pseudo_labels import fit_depth_prior
from deal_ros.training.trainer import OnlineTrainer

CLASSES = ["creativity_chenille_stems", "i_am_a_bunny_book", "kleenex_tissue_box", "laugh_out_loud_joke_book"]


def decode_apc_depth(raw: np.ndarray) -> np.ndarray:
    """The sample's rotated 16-bit depth -> metres (its README: d = ((v << 13) | (v >> 3)) & 0xFFFF; m = d / 1e4)."""
    v = raw.astype(np.uint32)
    return ((((v << 13) | (v >> 3)) & 0xFFFF) / 10000.0).astype(np.float32)


def load(data: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
    frames = []
    for color in sorted((data / "scene-0000").glob("frame-*.color.png")):
        stem = color.name.replace(".color.png", "")
        rgb = cv2.cvtColor(cv2.imread(str(color), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        depth = decode_apc_depth(cv2.imread(str(color.with_name(f"{stem}.depth.png")), cv2.IMREAD_UNCHANGED))
        segm_path = data / "scene-0000" / "segm" / f"{stem}.segm.png"
        segm = cv2.imread(str(segm_path), cv2.IMREAD_GRAYSCALE) if segm_path.exists() else None
        frames.append((rgb, depth, segm))
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/apc2016_shelf_sample"))
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--size", type=int, nargs=2, default=(240, 320), metavar=("H", "W"))
    parser.add_argument("--out", default="apc_out")
    args = parser.parse_args()
    frames = load(Path(args.data))
    if not frames:  # the trainer would wait for frames forever
        raise SystemExit(f"apc_overlays: no {args.data}/scene-0000/frame-*.color.png (pass --data)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = DealRosConfig(classes=CLASSES).updated({"model.input_height": args.size[0], "model.input_width": args.size[1],
                                               "train.device": "cpu"})
    trainer = OnlineTrainer(cfg)
    for rgb, depth, _ in frames:
        trainer.add_frame(rgb, depth, CLASSES)
    while trainer.step < args.steps:
        trainer.train_step()
    segmenter = Segmenter(cfg, trainer.model, model_lock=trainer.model_lock)
    agreement = {"fcn_foreground_standing_out": [], "fcn_background_on_plane": []}
    rows = []
    for index, (rgb, depth, segm) in enumerate(frames):
        result = segmenter(rgb, depth, CLASSES)
        prior = fit_depth_prior(torch.from_numpy(depth)[None, None], cfg.pseudo_label).prior[0, 0]
        prior = prior.numpy()
        plane_img = np.full((*prior.shape, 3), 128, np.uint8)
        plane_img[prior < 0] = (40, 40, 40)
        plane_img[prior > 0] = (255, 255, 255)
        if segm is not None:
            agreement["fcn_foreground_standing_out"].append(float((prior[segm > 0] > 0).mean()))
            agreement["fcn_background_on_plane"].append(float((prior[segm == 0] < 0).mean()))
        if index < 6:
            tiles = [rgb, plane_img, colorize(result.pseudo_label), overlay(rgb, result.mask)]
            rows.append(np.concatenate([cv2.resize(t, (320, 240), interpolation=cv2.INTER_NEAREST) for t in tiles], 1))
    cv2.imwrite(str(out / "apc_overlays.png"), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    summary = {k: round(float(np.mean(v)), 3) for k, v in agreement.items() if v}
    summary.update(frames=len(frames), steps=args.steps, size=list(args.size))
    (out / "apc_summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary))
    print(f"overlays (RGB | support plane: white = stands out, dark = background, grey = unknown | pseudo-label | "
          f"mask): {out / 'apc_overlays.png'}")


if __name__ == "__main__":
    try:
        main()
    except DealRosError as exc:  # a bad option (size, steps): one line, as the CLI prints it
        sys.exit(f"apc_overlays: {one_line(exc)}")
