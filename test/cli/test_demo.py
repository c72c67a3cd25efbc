"""`deal-ros demo` on a tiny budget, and which weights `deal-ros train` says it loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from clitools import assert_user_error

from deal_ros.cli import main
from deal_ros.models import BUILTIN_SHA256

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

TINY_DEMO = ["--steps", "2", "--train-frames", "3", "--eval-frames", "2", "--size", "64", "80"]


def test_demo_reports_the_builtin_weights(tmp_path: Path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["demo", *TINY_DEMO, "--out", str(out), "--arms", "cls only", "default (support plane)"]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "report.json").read_text())
    assert report["weights"] == "builtin"
    assert [a["name"] for a in report["arms"]] == ["cls only", "default (support plane)"]
    for text in (printed, (out / "report.md").read_text(), report["weights_loaded"]):
        assert "built-in ImageNet MobileNetV2" in text and BUILTIN_SHA256[:16] in text and "0 missing" in text
    assert (out / "loss_curves.png").stat().st_size > 0 and (out / "overlay_00.png").stat().st_size > 0


def test_demo_random_init_and_missing_weights(tmp_path: Path, capsys) -> None:
    assert main(["demo", *TINY_DEMO, "--out", str(tmp_path / "r"), "--arms", "cls only", "--weights", "none"]) == 0
    assert "Backbone weights: random init." in capsys.readouterr().out
    rc = main(["demo", *TINY_DEMO, "--out", str(tmp_path / "m"), "--weights", str(tmp_path / "nope.pth")])
    assert_user_error(rc, capsys.readouterr().err, "pretrained weights not found", "nope.pth")


def test_train_logs_the_weights_it_loaded(trained) -> None:
    err = trained.result.stderr
    assert "built-in ImageNet MobileNetV2" in err and BUILTIN_SHA256[:16] in err and "loaded 312 tensors" in err
