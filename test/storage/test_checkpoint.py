from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from deal_ros.config import DealRosConfig
from deal_ros.models import build_cam_net
from deal_ros.storage.checkpoint import (
    CheckpointError,
    NonFiniteWeightsError,
    load_checkpoint,
    load_model_state,
    read_manifest,
    save_checkpoint,
)

CFG = DealRosConfig(classes=["mug", "box"]).updated({"model.input_height": 64, "model.input_width": 80})


def _model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = build_cam_net(CFG.model, CFG.num_classes)
    optimizer = torch.optim.AdamW(model.param_groups(1e-3, 0.1), lr=1e-3)
    out = model(torch.randn(2, 3, 64, 80))
    (out.class_logits.sum() + out.seg_logits.mean()).backward()
    optimizer.step()
    return model, optimizer


def test_round_trip_keeps_weights_optimizer_and_step(tmp_path) -> None:
    model, optimizer = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "ck" / "model.safetensors", model, CFG, 42, optimizer)
    ckpt = load_checkpoint(path, expected=CFG)
    assert ckpt.step == 42 and ckpt.classes == ["mug", "box"]
    for name, value in model.state_dict().items():
        assert torch.equal(ckpt.model_state[name], value), name
    fresh = torch.optim.AdamW(model.param_groups(1e-3, 0.1), lr=1e-3)
    fresh.load_state_dict(ckpt.optimizer_state)
    reference = optimizer.state_dict()
    for index, state in fresh.state_dict()["state"].items():
        assert torch.equal(state["exp_avg"], reference["state"][index]["exp_avg"])
    assert read_manifest(path)["step"] == "42"
    assert not list(path.parent.glob("*.tmp")), "no temporary file left behind"


def test_refuses_other_classes_and_architecture(tmp_path) -> None:
    model, _ = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    with pytest.raises(CheckpointError, match=r"classes \['mug', 'box'\].*\['mug', 'cup'\]"):
        load_checkpoint(path, expected=CFG.updated({"classes": ["mug", "cup"]}))
    with pytest.raises(CheckpointError, match="backbone: checkpoint 'mobilenet_v2' vs config 'resnet18'"):
        load_checkpoint(path, expected=CFG.updated({"model.backbone": "resnet18"}))


def test_truncated_missing_and_foreign_files(tmp_path) -> None:
    model, _ = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="unreadable"):
        load_checkpoint(truncated)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.safetensors")
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a deal_ros checkpoint"):
        load_checkpoint(tmp_path / "foreign.safetensors")


def test_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch) -> None:
    model, _ = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    before = path.read_bytes()

    def half_then_full(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError("disk full")

    monkeypatch.setattr("pathlib.Path.write_bytes", half_then_full)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, CFG, 2)
    assert path.read_bytes() == before
    assert load_checkpoint(path).step == 1
    assert not list(tmp_path.glob("*.tmp"))


def test_concurrent_reader_never_sees_a_torn_file(tmp_path) -> None:
    model, _ = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 0)
    errors: list[Exception] = []
    done = threading.Event()

    def reader() -> None:
        while not done.is_set():
            try:
                load_checkpoint(path, expected=CFG)
            except Exception as exc:
                errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    for step in range(1, 15):
        save_checkpoint(path, model, CFG, step)
    done.set()
    thread.join()
    assert errors == []
    assert load_checkpoint(path).step == 14


def test_diverged_weights_never_replace_a_good_checkpoint(tmp_path) -> None:
    model, optimizer = _model_and_optimizer()
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 5, optimizer)
    before = path.read_bytes()
    for poison in (float("nan"), float("inf"), 1e20):
        with torch.no_grad():
            next(model.parameters()).view(-1)[0] = poison
        with pytest.raises(NonFiniteWeightsError, match=r"diverged weights .* at step 6 .*\(step 5\) is kept"):
            save_checkpoint(path, model, CFG, 6, optimizer)
        assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]
    with pytest.raises(NonFiniteWeightsError, match="nothing was written"):
        save_checkpoint(tmp_path / "new.safetensors", model, CFG, 6)
    assert not (tmp_path / "new.safetensors").exists()


def test_storage_errors_are_oserrors_naming_the_file(tmp_path, monkeypatch) -> None:
    """A full disk while writing: an OSError naming the checkpoint (callers retry or rescue), nothing left behind."""
    model, _ = _model_and_optimizer()

    def full_disk(self, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("pathlib.Path.write_bytes", full_disk)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    assert info.value.errno == errno.ENOSPC and info.value.filename == str(tmp_path / "m.safetensors")
    assert list(tmp_path.iterdir()) == []


def test_saving_never_goes_through_safetensors_own_temporary(tmp_path, monkeypatch) -> None:
    """save_file writes a .tmpXXXXXX of its own, which a SIGKILL during the save leaves behind (26.6 MB)."""
    model, optimizer = _model_and_optimizer()

    def own_temporary(*args, **kwargs):
        raise AssertionError("safetensors.torch.save_file called")

    monkeypatch.setattr("safetensors.torch.save_file", own_temporary)
    path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 3, optimizer)
    assert load_checkpoint(path).step == 3
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]



def test_a_save_removes_what_a_killed_save_left(tmp_path) -> None:
    """A SIGKILL during a save (safetensors' own .tmpXXXXXX of earlier versions) left 26.6 MB that nothing removed."""
    import time

    model, _ = _model_and_optimizer()
    leftover = tmp_path / ".tmpk2J9xQ"
    leftover.write_bytes((16).to_bytes(8, "little") + b'{"__metadata__":{}}' + bytes(1000))
    os.utime(leftover, (time.time() - 3600, time.time() - 3600))
    save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    assert [p.name for p in tmp_path.iterdir()] == ["m.safetensors"]

def test_checkpoint_permissions_follow_the_umask(tmp_path) -> None:
    model, _ = _model_and_optimizer()
    old = os.umask(0o022)
    try:
        path = save_checkpoint(tmp_path / "m.safetensors", model, CFG, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644  # readable by a segmenter running as another user


def test_a_state_dict_that_does_not_fit_is_one_short_line() -> None:
    model, _ = _model_and_optimizer()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    first, second, *_ = state
    state[first] = torch.zeros(7, 7)
    del state[second]
    state["extra.weight"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as info:
        load_model_state(model, state, "ck.safetensors")
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    assert f"1 tensor(s) missing: {second}" in message and "1 tensor(s) unexpected: extra.weight" in message
    assert f"1 tensor(s) of another shape: {first} (7, 7) vs model" in message


_SAVE_IN_A_FRESH_PROCESS = """
import sys, torch
sys.path.insert(0, sys.argv[2])
from test_checkpoint import _model_and_optimizer, CFG
from deal_ros.storage.checkpoint import save_checkpoint
model, optimizer = _model_and_optimizer()
save_checkpoint(sys.argv[1], model, CFG, step=7, optimizer=optimizer, extra={"b": 1, "a": 2})
"""


def test_the_same_weights_give_the_same_file_bytes_in_every_process(tmp_path) -> None:
    # safetensors orders the metadata by a per-process hash seed: the same save differed in its bytes
    files = [tmp_path / f"run{i}" / "model.safetensors" for i in range(3)]
    for path in files:
        subprocess.run([sys.executable, "-c", _SAVE_IN_A_FRESH_PROCESS, str(path), str(Path(__file__).parent)],
                       check=True, timeout=300)
    contents = [path.read_bytes() for path in files]
    assert contents[0] == contents[1] == contents[2]
    loaded = load_checkpoint(files[0])
    assert loaded.step == 7 and loaded.extra == {"b": 1, "a": 2} and loaded.config == CFG
