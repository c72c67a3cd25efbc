"""One-call GPU check: CUDA tests, online training steps/s (AMP on/off), peak GPU memory, segmenter fps and
latency at 640x480 (torch eager, onnxruntime), DEAL's overhead per step. Prints one table.

    bash scripts/gpu_check.sh                      # on a GPU machine: well under 5 minutes
    bash scripts/gpu_check.sh --device cpu --quick # the same code paths on the CPU at tiny sizes (CI)

Training: the default recipe with the built-in ImageNet MobileNetV2 at 240x320 (H x W), batch 8, past DEAL's
and the segmentation head's warm-ups, on synthetic frames; the four arms (AMP off/on x DEAL off/on) run
interleaved, 3 rounds of 10 steps each after a warm-up round (--quick: 64x80, batch 2, 1 round of 1 step).
The segmenter runs on 640x480 frames.
Targets on a GPU: training >= 20 steps/s, segmenter >= 100 fps, DEAL overhead <= 5 %. Exit code 1 when a
CUDA test fails or (on a GPU) a target is missed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
CUDA_TEST_FILES = ["test/losses/test_deal.py", "test/losses/test_structure_losses.py", "test/models/test_models.py",
                   "test/frames/test_augment.py", "test/online/test_startup.py",
                   "test/models/test_model_speed.py"]
TRAIN_TARGET_SPS = 20.0
SEGMENTER_TARGET_FPS = 100.0
DEAL_TARGET = 0.05


class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str]] = []
        self.failed = False

    def add(self, name: str, value: str, note: str = "", ok: bool | None = None) -> None:
        verdict = "" if ok is None else ("OK" if ok else "MISSED")
        self.failed |= ok is False
        self.rows.append((name, value, f"{verdict} {note}".strip()))
        print(f"  {name}: {value} {note}", file=sys.stderr, flush=True)  # progress while it runs

    def print(self) -> None:
        width = [max(len(r[i]) for r in self.rows) for i in range(2)]
        print(f"{'check':<{width[0]}}  {'result':<{width[1]}}  note")
        for name, value, note in self.rows:
            print(f"{name:<{width[0]}}  {value:<{width[1]}}  {note}")


def cuda_tests(table: Table) -> None:
    """The tests parametrised over 'cuda' (selected with -k cuda); on a CPU they are skipped or deselected."""
    command = [sys.executable, "-m", "pytest", "-q", "-k", "cuda", "-p", "no:cacheprovider", *CUDA_TEST_FILES]
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=False)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr.strip()[-200:]
    counts = dict((k, int(n)) for n, k in re.findall(r"(\d+) (passed|failed|skipped|deselected|error)", summary))
    ok = result.returncode in (0, 5) and not counts.get("failed") and not counts.get("error")
    table.add("CUDA tests (pytest -k cuda)", summary.strip("= "), f"{time.perf_counter() - start:.0f} s", ok=ok)


def training(table: Table, device: torch.device, size: tuple[int, int], batch: int, steps: int, rounds: int,
             ) -> dict[tuple[bool, bool], float]:
    from deal_ros.config import DealRosConfig
    from deal_ros.lab.synthetic import DEFAULT_CLASSES, make_tabletop_scenes
    from deal_ros.training.trainer import OnlineTrainer

    scenes = make_tabletop_scenes(max(2 * batch, 4), *size, list(DEFAULT_CLASSES), seed=0)
    arms: dict[tuple[bool, bool], Any] = {}
    for amp in (False, True):
        for deal in (False, True):
            cfg = DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({
                "model.input_height": size[0], "model.input_width": size[1], "train.batch_size": batch,
                "train.amp": amp, "loss.deal.enabled": deal, "loss.deal.warmup_steps": 0,
                "loss.seg_warmup_steps": 0, "train.device": device.type})
            trainer = OnlineTrainer(cfg, device=device)
            for s in scenes:
                trainer.add_frame(s.rgb, s.depth_m, s.tags)
            arms[(amp, deal)] = trainer
    elapsed = dict.fromkeys(arms, 0.0)
    peak_mb = dict.fromkeys(arms, 0.0)
    for index in range(rounds + 1):  # round 0 warms up (kernels, cudnn autotuning, allocator)
        for key, trainer in arms.items():
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
                peak_mb[key] = max(peak_mb[key], torch.cuda.max_memory_allocated(device) / 2**20)
            if index:
                elapsed[key] += time.perf_counter() - start
    sps = {key: steps * rounds / t for key, t in elapsed.items()}
    gpu = device.type == "cuda"
    label = f"{size[1]}x{size[0]} batch {batch}"
    for amp in (False, True):
        note = "" if gpu else "(AMP is CUDA-only: same as off on the CPU)" if amp else ""
        table.add(f"training steps/s, AMP {'on' if amp else 'off'}, DEAL on", f"{sps[(amp, True)]:.2f}",
                  f"{label} {note}".strip(), ok=(sps[(amp, True)] >= TRAIN_TARGET_SPS) if gpu and amp else None)
        if gpu:
            table.add(f"peak GPU memory, AMP {'on' if amp else 'off'}", f"{peak_mb[(amp, True)]:.0f} MiB",
                      "max_memory_allocated during a timed round")
        overhead = sps[(amp, False)] / sps[(amp, True)] - 1.0
        table.add(f"DEAL overhead per step, AMP {'on' if amp else 'off'}", f"{overhead * 100:+.1f} %",
                  f"cls-only {1e3 / sps[(amp, False)]:.1f} ms vs with DEAL {1e3 / sps[(amp, True)]:.1f} ms",
                  ok=overhead <= DEAL_TARGET if gpu else None)
    return sps


def segmenter(table: Table, device: torch.device, size: tuple[int, int], frames: int) -> None:
    from deal_ros.config import DealRosConfig
    from deal_ros.inference.segmenter import Segmenter
    from deal_ros.lab.synthetic import DEFAULT_CLASSES

    cfg = DealRosConfig(classes=list(DEFAULT_CLASSES)).updated({
        "model.input_height": size[0], "model.input_width": size[1], "train.device": device.type})
    seg = Segmenter(cfg, device=device)
    rgb = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    times = []
    for index in range(frames + 3):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        seg(rgb)  # returns host arrays: the GPU work is done when it returns
        if index >= 3:
            times.append(time.perf_counter() - start)
    latency = float(np.median(times))
    gpu = device.type == "cuda"
    table.add("segmenter (torch eager), 640x480 frame", f"{1 / latency:.1f} fps, {latency * 1e3:.2f} ms",
              f"network {size[1]}x{size[0]}, median of {frames}", ok=(1 / latency >= SEGMENTER_TARGET_FPS)
              if gpu else None)
    onnx_runtime(table, seg, cfg, size, frames)


def onnx_runtime(table: Table, seg: Any, cfg: Any, size: tuple[int, int], frames: int) -> None:
    try:
        import onnxruntime as ort
    except ImportError:
        table.add("segmenter (onnxruntime)", "not run", "onnxruntime not installed: pip install 'deal_ros[export]'")
        return
    from deal_ros.inference.export import (
        check_parity,
        export_onnx,
        frame_times,
        model_from_checkpoint,
        onnxruntime_session,
    )
    from deal_ros.storage.checkpoint import save_checkpoint

    providers = ort.get_available_providers()
    provider = "CUDAExecutionProvider" if "CUDAExecutionProvider" in providers else "CPUExecutionProvider"
    with tempfile.TemporaryDirectory(prefix="deal_ros_gpu_check_") as tmp:
        ckpt = save_checkpoint(Path(tmp) / "model.safetensors", seg.model, cfg, 0)
        start = time.perf_counter()
        result = export_onnx(ckpt, Path(tmp) / "model.onnx")
        export_s = time.perf_counter() - start
        session = onnxruntime_session(result.onnx_path, [provider])
        model, _, _ = model_from_checkpoint(ckpt)
        parity = check_parity(result.onnx_path, model, [np.random.default_rng(1).integers(
            0, 256, (480, 640, 3), dtype=np.uint8)], *size, session)
        torch_s, ort_s = frame_times(seg.model, cfg, session, *size, repeat=frames)
    table.add("ONNX export + parity", f"{export_s:.1f} s, max |dp| {parity.max_probability_diff:.1e}, "
              f"argmax {parity.argmax_agreement * 100:.2f} %", ok=parity.ok)
    table.add(f"segmenter (onnxruntime, {provider.replace('ExecutionProvider', '')}), 640x480 frame",
              f"{1 / ort_s:.1f} fps, {ort_s * 1e3:.2f} ms", f"torch eager {torch_s * 1e3:.2f} ms in the same run; "
              f"available providers {', '.join(p.replace('ExecutionProvider', '') for p in providers)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes and counts (the CPU check in CI)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest run")
    args = parser.parse_args(argv)
    from deal_ros.compute.device import DeviceError, describe_device, resolve_device

    try:
        device = resolve_device(args.device)
    except DeviceError as exc:
        print(f"gpu_check: {exc}", file=sys.stderr)
        return 2
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    size, batch, steps, rounds, frames = ((64, 80), 2, 1, 1, 3) if args.quick else ((240, 320), 8, 10, 3, 50)
    table = Table()
    cuda = f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}" if device.type == "cuda" else "CPU"
    table.add("device", describe_device(device), f"torch {torch.__version__}, {cuda}")
    if not args.skip_tests:
        cuda_tests(table)
    training(table, device, size, batch, steps, rounds)
    segmenter(table, device, size, frames)
    table.print()
    return 1 if table.failed else 0


if __name__ == "__main__":
    sys.exit(main())
