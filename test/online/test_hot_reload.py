"""Hot reload polling of the checkpoint file."""

from __future__ import annotations

import os
import time

import pytest
import torch

from deal_ros.config import DealRosConfig
from deal_ros.online.hot_reload import CheckpointPoller
from deal_ros.storage.checkpoint import save_checkpoint


@pytest.fixture()
def tiny_model():
    cfg = DealRosConfig(classes=["mug"])
    return cfg, torch.nn.Linear(2, 2)


def test_poller_reloads_only_newer_steps(tmp_path, tiny_model):
    cfg, model = tiny_model
    path = tmp_path / "model.safetensors"
    poller = CheckpointPoller(path)
    assert poller.poll().step is None  # missing: fine
    save_checkpoint(path, model, cfg, step=5)
    assert poller.poll().step == 5
    poller.mark_loaded(5)
    assert poller.poll().step is None  # unchanged file: a stat only
    save_checkpoint(path, model, cfg, step=3)
    result = poller.poll()
    assert result.step is None and "not newer" in result.note
    save_checkpoint(path, model, cfg, step=9)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert poller.poll().step == 9


def test_poller_survives_half_written_file(tmp_path, tiny_model):
    cfg, model = tiny_model
    path = tmp_path / "model.safetensors"
    save_checkpoint(tmp_path / "full.safetensors", model, cfg, step=7)
    data = (tmp_path / "full.safetensors").read_bytes()
    path.write_bytes(data[: len(data) // 3])
    poller = CheckpointPoller(path)
    result = poller.poll()
    assert result.step is None and "not readable" in result.note
    path.write_bytes(data)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert poller.poll().step == 7
    poller.mark_failed()  # e.g. the load itself failed: retried although the file did not change
    assert poller.poll().step == 7
