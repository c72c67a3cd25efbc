"""Start-up checks of the environment and the weights line."""

from __future__ import annotations

import torch

from deal_ros.config import DealRosConfig
from deal_ros.online.startup import check_environment, device_notes, weights_line


def test_check_environment_here():
    report = check_environment()
    assert report.ok
    assert any(line.startswith("torch ") for line in report.info)
    assert any(line.startswith("numpy 1.") for line in report.info)
    assert not any("CUDA" in w for w in report.warnings)  # the device is judged once the parameters are known
    if not torch.cuda.is_available():
        forced = check_environment("cuda")
        assert not forced.ok and "CUDA is not available" in forced.errors[0]


def test_device_notes():
    assert device_notes("auto", "cuda") == ([], [])
    info, warnings = device_notes("auto", "cpu")  # deal_ros.compute.device warns itself; the node adds what to do
    assert not warnings and "train.device: cpu" in info[0]
    info, warnings = device_notes("cpu", "cpu")  # device:=cpu: said as intended, no warning
    assert not warnings and "as requested" in info[0]


def test_weights_line_says_what_the_network_starts_from():
    from deal_ros.models import build_cam_net

    cfg = DealRosConfig()
    builtin = weights_line(build_cam_net(cfg.model, cfg.num_classes))
    assert builtin.startswith("weights: ") and "loaded" in builtin and "BatchNorm frozen" in builtin
    random_init = weights_line(build_cam_net(cfg.updated({"model.pretrained_path": ""}).model, cfg.num_classes))
    assert "random init" in random_init and "BatchNorm trains" in random_init  # the issue-8 trap: frozen random BN
