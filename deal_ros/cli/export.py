"""`deal-ros export CHECKPOINT --onnx model.onnx`: the segmenter network as ONNX, for TensorRT / Isaac ROS.

Writes model.onnx and model.onnx.json (classes and their ids, input size and range, normalisation, outputs,
checkpoint step). Input 'image': float32 (N, 3, H, W) RGB, pixel / 255; outputs 'probabilities'
(N, K + 1, H, W), 'mask' int32 (N, H, W), 'confidence' (N, H, W), and with --cams 'cams' (N, K, h, w).
The input normalisation is inside the graph. See the README for trtexec and Isaac ROS.

With onnxruntime installed (pip install 'deal_ros[export]') the file is checked right away: probabilities
against the torch network on frames (built-in synthetic scenes, or --frames PNG files), and the time of a
640x480 frame against the torch segmenter's. Exit code 1 when the check fails.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from deal_ros.errors import UserError

if TYPE_CHECKING:
    import numpy as np

CHECK_FRAMES = 4
"""Synthetic frames for the parity check when --frames is not given."""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("export", help="export the segmenter network to ONNX (TensorRT, Isaac ROS)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT", help="model.safetensors written by training")
    parser.add_argument("--onnx", required=True, metavar="FILE", help="where to write the ONNX model")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"),
                        help="input size (default: the checkpoint's model.input_height/width); multiples of 16")
    parser.add_argument("--dynamic", action="store_true",
                        help="free batch, height and width (multiples of 16; 32 with output_stride 32)")
    parser.add_argument("--cams", action="store_true", help="also output the CAM logits")
    parser.add_argument("--opset", type=int, default=None, metavar="N", help="ONNX opset, 11 to 20 (default: 17)")
    parser.add_argument("--frames", nargs="+", metavar="PNG", help="RGB images for the parity check "
                        "(default: built-in synthetic scenes)")
    parser.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from deal_ros.inference.export import DEFAULT_OPSET, export_onnx
    from deal_ros.storage.files import check_output_dir, remove_stale_temp_files

    onnx_path = Path(args.onnx)
    if onnx_path.is_dir():
        raise UserError(f"--onnx {onnx_path} is a folder; give a file name, e.g. {onnx_path / 'model.onnx'}")
    if not onnx_path.parent.is_dir():
        raise UserError(f"--onnx: folder {onnx_path.parent} does not exist")
    checkpoint = Path(args.checkpoint)
    for target in (onnx_path, onnx_path.with_name(onnx_path.name + ".json")):
        if target.resolve() == checkpoint.resolve():
            raise UserError(f"--onnx {onnx_path} would overwrite the checkpoint {checkpoint} (with the "
                            f"{'model' if target == onnx_path else 'sidecar JSON'}); choose another file, e.g. "
                            f"{checkpoint.with_suffix('.onnx')}")
    check_output_dir(onnx_path.parent, "--onnx folder")  # read-only: refused before the export
    remove_stale_temp_files(onnx_path.parent)
    height, width = args.size if args.size else (None, None)
    frames = _read_frames(args.frames) if args.frames else None
    result = export_onnx(args.checkpoint, onnx_path, height=height, width=width, dynamic=args.dynamic,
                         cams=args.cams, opset=args.opset or DEFAULT_OPSET)
    side = result.sidecar
    print(f"wrote {result.onnx_path} (opset {side['opset']}, input {side['input']['height']}x"
          f"{side['input']['width']}{', dynamic' if args.dynamic else ''}, step {side['checkpoint']['step']}) "
          f"in {result.export_s:.1f} s, and {result.sidecar_path}")
    print("classes: " + ", ".join(f"{i} = {name}" for name, i in side["class_ids"].items()))
    if args.no_check:
        return 0
    return check(args.checkpoint, result.onnx_path, side["input"]["height"], side["input"]["width"], frames)


def _read_frames(paths: list[str]) -> list[np.ndarray]:
    import cv2

    frames = []
    for path in paths:
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None:
            raise UserError(f"--frames: {path} is not a readable image")
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    return frames


def check(checkpoint: str, onnx_path: Path, height: int, width: int, frames: list[np.ndarray] | None) -> int:
    """Parity and a 640x480 frame's time, onnxruntime vs torch; 0 when parity holds."""
    from deal_ros.inference.export import (
        ExportError,
        check_parity,
        frame_times,
        model_from_checkpoint,
        onnxruntime_session,
    )

    try:
        session = onnxruntime_session(onnx_path)
    except ExportError as exc:
        print(f"{exc}: the export is not checked")
        return 0
    model, cfg, _ = model_from_checkpoint(checkpoint)
    if frames is None:
        from deal_ros.lab.synthetic import make_tabletop_scenes

        frames = [s.rgb for s in make_tabletop_scenes(CHECK_FRAMES, 480, 640, cfg.classes, seed=0)]
    parity = check_parity(onnx_path, model, frames, height, width, session)
    print(parity.format())
    torch_s, ort_s = frame_times(model, cfg, session, height, width)
    print(f"a 640x480 frame (resize, network, mask and confidence at 640x480): torch segmenter {torch_s * 1e3:.1f} ms, "
          f"onnxruntime {ort_s * 1e3:.1f} ms ({session.get_providers()[0]}), ratio {ort_s / torch_s:.2f}")
    return 0 if parity.ok else 1
