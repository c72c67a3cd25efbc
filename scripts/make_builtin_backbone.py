#!/usr/bin/env python3
"""Regenerate the package's built-in ImageNet MobileNetV2 from the quantised TFLite file.

    python scripts/make_builtin_backbone.py [--tflite FILE] [--out FILE]

Source: ``../shared/data/mobilenet_v2_imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite`` (google-coral
test_data, Apache-2.0). Its weights are uint8 with one scale and zero point per tensor and its biases
int32, so storing those integers with their scales keeps every value: the output is a safetensors file
of about 3.5 MB (``deal_ros/models/data/``) whose dequantised tensors equal the float conversion in
``../shared/data/mobilenet_v2_imagenet`` (test/models/test_weights.py checks it).

Why a reader of our own: the flatbuffer needs ~60 lines to walk, and no TFLite package becomes a
dependency of the project. The graph is checked before anything is written (53 convs in MobileNetV2
order with their TF scope, stride, SAME padding, activation; bias scale = input scale x weight scale).
Writing the same tensors twice gives the same bytes (one metadata entry; safetensors orders tensors),
so the sha256 in ``deal_ros/models/builtin.py`` stays valid; the script prints the new one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TFLITE = ROOT.parent / "shared/data/mobilenet_v2_imagenet_tflite/mobilenet_v2_1.0_224_quant.tflite"
DEFAULT_OUT = ROOT / "deal_ros/models/data/mobilenet_v2_imagenet_uint8.safetensors"
SOURCE_SHA256 = "7aad0c74c5e3c06e5eb3c827e13304fdd68a83da6087d92ee169c24ff9fd4776"
SOURCE_COMMIT = "104342d2d3480b3e66203073dac24f4e2dbb4c41"

# TFLite schema enums used here.
OP_ADD, OP_AVERAGE_POOL_2D, OP_CONV_2D, OP_DEPTHWISE_CONV_2D = 0, 1, 3, 4
TYPE_INT32, TYPE_UINT8 = 2, 3
PADDING_SAME, PADDING_VALID = 0, 1
ACT_NONE, ACT_RELU6 = 0, 3


class Table:
    """One flatbuffer table: field i of the schema via the vtable (0 = absent -> default)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf, self.pos = buf, pos
        self.vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        self.vtable_size = struct.unpack_from("<H", buf, self.vtable)[0]

    def _field(self, index: int) -> int:
        offset = 4 + 2 * index
        return struct.unpack_from("<H", self.buf, self.vtable + offset)[0] if offset < self.vtable_size else 0

    def scalar(self, index: int, fmt: str, default: int = 0) -> int:
        offset = self._field(index)
        return struct.unpack_from("<" + fmt, self.buf, self.pos + offset)[0] if offset else default

    def _target(self, index: int) -> int | None:
        offset = self._field(index)
        if not offset:
            return None
        at = self.pos + offset
        return at + struct.unpack_from("<I", self.buf, at)[0]

    def table(self, index: int) -> Table | None:
        at = self._target(index)
        return None if at is None else Table(self.buf, at)

    def _vector(self, index: int) -> tuple[int, int]:
        at = self._target(index)
        return (0, 0) if at is None else (at + 4, struct.unpack_from("<I", self.buf, at)[0])

    def tables(self, index: int) -> list[Table]:
        start, count = self._vector(index)
        return [Table(self.buf, start + 4 * k + struct.unpack_from("<I", self.buf, start + 4 * k)[0])
                for k in range(count)]

    def array(self, index: int, dtype: str) -> np.ndarray:
        start, count = self._vector(index)
        return np.frombuffer(self.buf, dtype=np.dtype(dtype).newbyteorder("<"), count=count, offset=start)

    def string(self, index: int) -> str:
        start, count = self._vector(index)
        return self.buf[start:start + count].decode()


@dataclass
class Tensor:
    name: str
    shape: tuple[int, ...]
    dtype: int
    data: np.ndarray
    scale: np.ndarray
    zero_point: np.ndarray


@dataclass
class Op:
    code: int
    inputs: list[int]
    outputs: list[int]
    options: Table | None


def read_tflite(path: Path) -> tuple[list[Tensor], list[Op]]:
    """Tensors (with buffer data and quantisation) and operators of subgraph 0, in graph order."""
    buf = path.read_bytes()
    if buf[4:8] != b"TFL3":
        sys.exit(f"{path}: not a TFLite flatbuffer (identifier {buf[4:8]!r}, expected b'TFL3')")
    model = Table(buf, struct.unpack_from("<I", buf, 0)[0])
    # OperatorCode: 0 deprecated_builtin_code (int8), 3 builtin_code (int32); the larger one is right.
    codes = [max(c.scalar(0, "b"), c.scalar(3, "i")) for c in model.tables(1)]
    buffers = model.tables(4)
    subgraph = model.tables(2)[0]
    tensors = []
    for t in subgraph.tables(0):
        quant = t.table(4)
        scale = quant.array(2, "f4") if quant else np.zeros(0, np.float32)
        zero_point = quant.array(3, "i8") if quant else np.zeros(0, np.int64)
        data = buffers[t.scalar(2, "I")].array(0, "u1")
        tensors.append(Tensor(t.string(3), tuple(int(s) for s in t.array(0, "i4")), t.scalar(1, "b"), data,
                              scale, zero_point))
    ops = [Op(codes[o.scalar(0, "I")], [int(i) for i in o.array(1, "i4")], [int(i) for i in o.array(2, "i4")],
              o.table(4)) for o in subgraph.tables(3)]
    return tensors, ops


def torchvision_layout() -> list[tuple[str, str, str, int, bool]]:
    """(conv weight key, bias key, TF scope, stride, relu6) of the 53 convs in graph order."""
    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))
    layout = [("features.0.0.weight", "features.0.1.bias", "MobilenetV2/Conv/", 2, True)]
    index = 1
    for t, _, n, s in settings:
        for i in range(n):
            stride = s if i == 0 else 1
            scope = "MobilenetV2/expanded_conv" + ("" if index == 1 else f"_{index - 1}")
            f = f"features.{index}.conv"
            if t == 1:
                layout += [(f"{f}.0.0.weight", f"{f}.0.1.bias", f"{scope}/depthwise/", stride, True),
                           (f"{f}.1.weight", f"{f}.2.bias", f"{scope}/project/", 1, False)]
            else:
                layout += [(f"{f}.0.0.weight", f"{f}.0.1.bias", f"{scope}/expand/", 1, True),
                           (f"{f}.1.0.weight", f"{f}.1.1.bias", f"{scope}/depthwise/", stride, True),
                           (f"{f}.2.weight", f"{f}.3.bias", f"{scope}/project/", 1, False)]
            index += 1
    layout.append(("features.18.0.weight", "features.18.1.bias", "MobilenetV2/Conv_1/", 1, True))
    layout.append(("classifier.1.weight", "classifier.1.bias", "MobilenetV2/Logits/Conv2d_1c_1x1/", 1, False))
    return layout


def _check(ok: bool, message: str) -> None:
    if not ok:
        sys.exit(f"unexpected graph: {message}")


def _per_tensor(t: Tensor, dtype: int) -> tuple[float, int]:
    _check(t.dtype == dtype, f"{t.name}: type {t.dtype}, expected {dtype}")
    _check(t.scale.size == 1 and t.zero_point.size == 1, f"{t.name}: not per-tensor quantised")
    return float(t.scale[0]), int(t.zero_point[0])


def convert(tensors: list[Tensor], ops: list[Op]) -> dict[str, torch.Tensor]:
    """Integer tensors in torchvision layout + float32 scale and int32 zero point per tensor."""
    convs = [op for op in ops if op.code in (OP_CONV_2D, OP_DEPTHWISE_CONV_2D)]
    layout = torchvision_layout()
    _check(len(convs) == len(layout), f"{len(convs)} convs, expected {len(layout)}")
    _check(sum(op.code == OP_ADD for op in ops) == 10, "expected 10 residual ADDs")
    pools = [op for op in ops if op.code == OP_AVERAGE_POOL_2D]
    _check(len(pools) == 1 and pools[0].options.scalar(0, "b") == PADDING_VALID
           and (pools[0].options.scalar(3, "i"), pools[0].options.scalar(4, "i")) == (7, 7), "one 7x7 VALID pool")
    out: dict[str, torch.Tensor] = {}
    for op, (weight_key, bias_key, scope, stride, relu6) in zip(convs, layout, strict=True):
        x, w, b = (tensors[i] for i in op.inputs)
        _check(scope in w.name, f"{weight_key}: weight {w.name!r} is not in scope {scope}")
        depthwise = op.code == OP_DEPTHWISE_CONV_2D
        _check(depthwise == ("/depthwise/" in scope), f"{w.name}: op type")
        # Conv2DOptions: padding 0, stride_w 1, stride_h 2, activation 3; Depthwise: activation 4.
        opts = op.options
        _check(opts.scalar(0, "b") == PADDING_SAME, f"{w.name}: padding is not SAME")
        _check((opts.scalar(1, "i"), opts.scalar(2, "i")) == (stride, stride), f"{w.name}: stride")
        activation = opts.scalar(4 if depthwise else 3, "b")
        _check(activation == (ACT_RELU6 if relu6 else ACT_NONE), f"{w.name}: activation {activation}")
        in_scale, _ = _per_tensor(x, TYPE_UINT8)
        w_scale, w_zero = _per_tensor(w, TYPE_UINT8)
        b_scale, b_zero = _per_tensor(b, TYPE_INT32)
        _check(b_zero == 0 and abs(b_scale - in_scale * w_scale) <= 1e-6 * b_scale, f"{b.name}: bias scale")
        q = w.data.reshape(w.shape)
        if depthwise:  # 1HWC -> C1HW
            q = q.transpose(3, 0, 1, 2)
        elif weight_key.startswith("classifier"):  # (1001, 1, 1, 1280) -> Linear (1001, 1280)
            q = q.reshape(w.shape[0], w.shape[3])
        else:  # OHWI -> OIHW
            q = q.transpose(0, 3, 1, 2)
        bias = b.data.view("<i4").reshape(b.shape)
        for key, values, scale, zero in ((weight_key, q, w_scale, w_zero), (bias_key, bias, b_scale, 0)):
            out[key] = torch.from_numpy(np.ascontiguousarray(values).copy())
            out[key + ".scale"] = torch.tensor(scale, dtype=torch.float32)
            out[key + ".zero_point"] = torch.tensor(zero, dtype=torch.int32)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tflite", type=Path, default=DEFAULT_TFLITE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    if not args.tflite.is_file():
        print(f"error: {args.tflite} not found (clone beside ../shared or pass --tflite)", file=sys.stderr)
        return 2
    digest = hashlib.sha256(args.tflite.read_bytes()).hexdigest()
    if digest != SOURCE_SHA256:
        print(f"error: {args.tflite} has sha256 {digest}, expected {SOURCE_SHA256}", file=sys.stderr)
        return 2
    from safetensors.torch import save_file

    tensors = convert(*read_tflite(args.tflite))
    meta = {
        "format": "deal_ros.quantized_weights/1",
        "architecture": "mobilenet_v2",
        "num_classes": 1001,
        "classes": "index 0 = background, 1..1000 = ImageNet in torchvision order",
        "dequantize": "real = scale * (q - zero_point), float32",
        "batchnorm": "folded: each BatchNorm2d has weight 1, running_mean 0, running_var 1 - eps, the stored bias",
        "bn_eps": 1e-5,
        "input_norm": "tf",
        "padding": "tf_same",
        "source": f"google-coral/test_data@{SOURCE_COMMIT} mobilenet_v2_1.0_224_quant.tflite sha256 {SOURCE_SHA256}",
        "license": "Apache-2.0 (see NOTICE.md beside this file)",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out), metadata={"deal_ros": json.dumps(meta, sort_keys=True)})
    sha = hashlib.sha256(args.out.read_bytes()).hexdigest()
    count = sum(v.numel() for k, v in tensors.items() if not k.endswith((".scale", ".zero_point")))
    print(f"wrote {args.out}: {len(tensors) // 3} quantised tensors, {count} values, "
          f"{args.out.stat().st_size} bytes, sha256 {sha}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
