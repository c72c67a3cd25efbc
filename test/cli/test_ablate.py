"""`deal-ros ablate` in reduced form: 64x80, 2 steps, 2 loss sets; table, JSON and PNG come out."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from clitools import assert_user_error

from deal_ros.cli import main
from deal_ros.lab.recipes import set_overrides

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop


def test_ablate_writes_table_json_and_png(tmp_path, capsys) -> None:
    out = tmp_path / "ablation"
    code = main(["ablate", "--sets", "cls+deal", "cls+deal+isl+fsl", "--steps", "2", "--train-frames", "3",
                 "--eval-frames", "2", "--size", "64", "80", "--set", "train.batch_size=2", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "| cls+deal |" in printed and "| cls+deal+isl+fsl |" in printed and "overhead vs cls+deal" in printed
    report = json.loads((out / "ablation.json").read_text())
    assert [s["name"] for s in report["sets"]] == ["cls+deal", "cls+deal+isl+fsl"]
    for row in report["sets"]:
        assert 0.0 <= row["pseudo_miou"] <= 1.0 and 0.0 <= row["mask_miou"] <= 1.0 and row["mean_step_time_s"] > 0
    assert report["sets"][0]["step_time_overhead"] == 0.0
    assert any(h["loss_fsl"] != 0.0 for h in report["history"]["cls+deal+isl+fsl"])
    assert all(h["loss_fsl"] == 0.0 for h in report["history"]["cls+deal"])
    image = cv2.imread(str(out / "ablation_miou.png"))
    assert image is not None and image.shape[0] > 50
    assert "| loss set |" in (out / "ablation.md").read_text()


def test_ablate_reads_a_folder(tmp_path) -> None:
    for sub in ("rgb", "depth", "gt"):
        (tmp_path / "data" / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        gt = np.zeros((64, 80), np.uint8)
        gt[20:40, 20 + 5 * i:45 + 5 * i] = 1
        rgb = rng.integers(0, 60, (64, 80, 3), dtype=np.uint8)
        rgb[gt == 1] = (200, 30, 30)
        depth = np.where(gt == 1, 700, 800).astype(np.uint16)
        cv2.imwrite(str(tmp_path / "data" / "rgb" / f"{i:03d}.png"), rgb[..., ::-1])
        cv2.imwrite(str(tmp_path / "data" / "depth" / f"{i:03d}.png"), depth)
        cv2.imwrite(str(tmp_path / "data" / "gt" / f"{i:03d}.png"), gt)
    code = main(["ablate", "--sets", "cls", "--steps", "1", "--train-frames", "2", "--eval-frames", "1",
                 "--size", "64", "80", "--folder", str(tmp_path / "data"), "--classes", "mug", "--set",
                 "train.batch_size=2",
                 "--out", str(tmp_path / "out")])
    assert code == 0
    report = json.loads((tmp_path / "out" / "ablation.json").read_text())
    assert report["train_frames"] == 2 and report["eval_frames"] == 1


def test_loss_sets_are_parsed_strictly() -> None:
    overrides = set_overrides("cls+deal+boundary")
    assert overrides["loss.deal.enabled"] and overrides["loss.boundary.enabled"]
    assert overrides["loss.smoothness.source"] == "learned" and not overrides["loss.fsl.enabled"]
    assert not set_overrides("cls")["loss.deal.enabled"]
    assert main(["ablate", "--sets", "cls+magic", "--steps", "1"]) == 2
    with pytest.raises(Exception, match="start with 'cls'"):
        set_overrides("deal")


def test_ground_truth_of_another_aspect_is_refused_not_stretched(scene_bag, other_aspect_gt, tmp_path,
                                                                 capsys) -> None:
    code = main(["ablate", "--sets", "cls", "--steps", "1", "--train-frames", "2", "--eval-frames", "1",
                 "--classes", "mug,box", "--bag", str(scene_bag.bag.path), "--gt-dir", str(other_aspect_gt),
                 "--size", "32", "48", "--out", str(tmp_path / "a")])
    assert_user_error(code, capsys.readouterr().err, "ground truth is 48x48 but its frame is 64x48 (width x height)")
