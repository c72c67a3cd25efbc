"""ONNX export: onnxruntime matches the torch segmenter on real frames; sidecar; CLI; robot install without onnx."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from deal_ros.config import DealRosConfig
from deal_ros.inference.export import (
    PARITY_MAX_DIFF,
    PARITY_MIN_AGREEMENT,
    SegmenterGraph,
    check_parity,
    export_onnx,
    model_from_checkpoint,
    network_input,
    onnxruntime_session,
)

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

ort = pytest.importorskip("onnxruntime", reason="onnxruntime not installed (pip install 'deal_ros[export]')")

SIZE = (128, 160)
CLASSES = ["creativity_chenille_stems", "i_am_a_bunny_book", "kleenex_tissue_box", "laugh_out_loud_joke_book"]
APC = Path(__file__).resolve().parents[2] / "shared" / "data" / "apc2016_shelf_sample" / "scene-0000"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Real RealSense colour frames (640x480) of the APC sample, else built-in synthetic scenes."""
    if APC.is_dir():
        return [cv2.cvtColor(cv2.imread(str(APC / f"frame-{i:06d}.color.png")), cv2.COLOR_BGR2RGB) for i in (0, 5, 10)]
    from deal_ros.lab.synthetic import make_tabletop_scenes

    return [s.rgb for s in make_tabletop_scenes(3, 480, 640, CLASSES, seed=0)]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint with the built-in ImageNet MobileNetV2 (the product's default) after a training step."""
    from deal_ros.training.trainer import OnlineTrainer

    out = tmp_path_factory.mktemp("export_ckpt")
    cfg = DealRosConfig(classes=CLASSES).updated({
        "model.input_height": SIZE[0], "model.input_width": SIZE[1], "train.device": "cpu", "train.batch_size": 2,
        "checkpoint.directory": str(out), "loss.seg_warmup_steps": 0})
    trainer = OnlineTrainer(cfg)
    rng = np.random.default_rng(0)
    for _ in range(2):
        trainer.add_frame(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8),
                          rng.uniform(0.5, 1.5, SIZE).astype(np.float32), CLASSES[:2])
    trainer.train_step()
    return trainer.save()


@pytest.fixture(scope="module")
def exported(checkpoint, tmp_path_factory):
    return export_onnx(checkpoint, tmp_path_factory.mktemp("onnx") / "model.onnx", cams=True)


def test_onnxruntime_matches_the_torch_segmenter_on_real_frames(exported, checkpoint, frames):
    model, cfg, _ = model_from_checkpoint(checkpoint)
    parity = check_parity(exported.onnx_path, model, frames, *SIZE)
    assert parity.max_probability_diff <= PARITY_MAX_DIFF, parity.format()
    assert parity.argmax_agreement >= PARITY_MIN_AGREEMENT, parity.format()
    # The segmenter itself (host resize, mask at camera resolution) against the ONNX mask resized the same way.
    from deal_ros.inference.segmenter import Segmenter

    segmenter = Segmenter(cfg, model=model)
    session = onnxruntime_session(exported.onnx_path)
    for rgb in frames:
        want = segmenter(rgb)
        _, mask, confidence, cams = session.run(None, {"image": network_input(rgb, *SIZE)})
        assert mask.dtype == np.int32 and cams.shape == (1, len(CLASSES), SIZE[0] // 16, SIZE[1] // 16)
        full = cv2.resize(mask[0].astype(np.uint8), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST_EXACT)
        assert (full == want.mask).mean() >= PARITY_MIN_AGREEMENT
        conf = cv2.resize(confidence[0], rgb.shape[1::-1], interpolation=cv2.INTER_LINEAR)
        assert np.abs(conf - want.confidence).max() <= PARITY_MAX_DIFF


def test_sidecar_names_classes_input_and_normalisation(exported):
    side = json.loads(exported.sidecar_path.read_text())
    assert exported.sidecar_path.name == "model.onnx.json" and side["onnx"] == "model.onnx"
    assert side["classes"] == ["background", *CLASSES]
    assert side["class_ids"] == {name: i for i, name in enumerate(side["classes"])}
    expected = {"name": "image", "height": SIZE[0], "width": SIZE[1], "range": [0.0, 1.0], "layout": "NCHW",
                "color": "RGB", "dtype": "float32", "dynamic": False}
    assert {k: side["input"][k] for k in expected} == expected
    assert side["normalisation"]["name"] == "tf" and side["normalisation"]["inside_graph"]
    assert side["checkpoint"]["step"] == 1 and side["opset"] == 17
    assert side["outputs"]["probabilities"]["shape"] == ["N", len(CLASSES) + 1, *SIZE]
    assert side["outputs"]["cams"]["shape"] == ["N", len(CLASSES), SIZE[0] // 16, SIZE[1] // 16]


def test_dynamic_export_runs_other_sizes_and_batches(checkpoint, tmp_path):
    result = export_onnx(checkpoint, tmp_path / "dyn.onnx", dynamic=True)
    model, _, _ = model_from_checkpoint(checkpoint)
    graph = SegmenterGraph(model).eval()
    session = onnxruntime_session(result.onnx_path)
    for shape in ((2, 3, 96, 128), (1, 3, 160, 224)):
        x = torch.rand(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want = graph(x)
        got = session.run(None, {"image": x.numpy()})
        assert got[0].shape == tuple(want[0].shape)
        assert np.abs(got[0] - want[0].numpy()).max() <= PARITY_MAX_DIFF
        assert (got[1] == want[1].numpy()).mean() >= PARITY_MIN_AGREEMENT


def test_cli_exports_checks_and_refuses_bad_paths(checkpoint, frames, tmp_path, capsys):
    from deal_ros.cli import main

    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    assert main(["export", str(checkpoint), "--onnx", str(tmp_path / "m.onnx"), "--frames", str(png)]) == 0
    out = capsys.readouterr().out
    assert "onnxruntime vs torch" in out and ": OK" in out and "1 = creativity_chenille_stems" in out
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "m.onnx.json").is_file()
    assert main(["export", str(tmp_path / "missing.safetensors"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "checkpoint not found" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--onnx", str(tmp_path / "no" / "m.onnx"), "--no-check"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", str(checkpoint), "--onnx", str(tmp_path / "s.onnx"), "--size", "100", "160"]) == 2
    assert "multiples of 16" in capsys.readouterr().err



def test_export_refuses_to_write_over_its_checkpoint(checkpoint, tmp_path, capsys):
    """`--onnx model/model.safetensors` overwrote the trained checkpoint and exited 0."""
    from deal_ros.cli import main

    trained = tmp_path / "model" / "model.safetensors"
    trained.parent.mkdir()
    trained.write_bytes(checkpoint.read_bytes())
    assert main(["export", str(trained), "--onnx", str(trained), "--no-check"]) == 2
    assert f"--onnx {trained} would overwrite the checkpoint" in capsys.readouterr().err
    assert trained.read_bytes() == checkpoint.read_bytes()


def test_a_failed_export_keeps_the_previous_model_and_names_it(checkpoint, tmp_path, monkeypatch, capsys):
    """On a full disk the previous valid model.onnx became a truncated file, and the message named no path."""
    import errno
    import os
    import shutil
    from collections import namedtuple

    from deal_ros.cli import main

    onnx_path = tmp_path / "model.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--no-check"]) == 0
    before = onnx_path.read_bytes()
    capsys.readouterr()

    def full_disk(model, args, f, **kwargs):
        Path(f).write_bytes(b"half a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch.onnx, "export", full_disk)
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--no-check"]) == 2
    err = capsys.readouterr().err
    assert f"cannot write {onnx_path}: No space left on device (ENOSPC); the file there is unchanged" in err
    assert onnx_path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.json"]

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--no-check"]) == 2
    assert "has 0.0 MB free but the ONNX model" in capsys.readouterr().err  # refused before exporting

def test_robot_install_imports_no_onnx_package():
    code = ("import sys, deal_ros.inference.export, deal_ros.cli.export, deal_ros.inference.segmenter; "
            "print(sorted(m for m in ('onnx', 'onnxruntime') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


@pytest.mark.parametrize("opset", [5, 9, 21])
def test_an_opset_the_network_does_not_export_at_is_refused_in_one_line(checkpoint, tmp_path, capfd, opset):
    from deal_ros.cli import main

    onnx_path = tmp_path / "m.onnx"
    assert main(["export", str(checkpoint), "--onnx", str(onnx_path), "--opset", str(opset), "--no-check"]) == 2
    out, err = capfd.readouterr()
    assert out == "" and "Torch IR graph" not in err  # torch's exporter printed the whole graph (294 KB)
    assert err.strip().count("\n") == 0 and f"opset {opset} is not supported: give 11 to 20" in err
    assert not onnx_path.exists()
