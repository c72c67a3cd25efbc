"""`deal-ros bench`: both measurements run and report their ratios (timings themselves are not checked)."""

from __future__ import annotations

import json

import pytest
from clitools import assert_user_error

from deal_ros.cli import main

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop


def test_bench_train_io_prints_ratio(tmp_path, capsys):
    out = tmp_path / "io.json"
    rc = main(["bench", "train-io", "--steps", "1", "--rounds", "1", "--frames", "4", "--camera-size", "48", "64",
               "--size", "32", "48", "--batch", "2", "--set", "train.device=cpu", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc in (0, 1), text
    assert "ratio bag / memory:" in text and "steps/s" in text
    data = json.loads(out.read_text())
    assert data["frames"] == 4 and data["bag_steps_per_s"] > 0 and data["memory_steps_per_s"] > 0


def test_bench_decode_prints_ratios(capsys):
    rc = main(["bench", "decode", "--width", "32", "--height", "24", "--repeat", "1"])
    text = capsys.readouterr().out
    assert rc in (0, 1), text
    assert "worst view-decode ratio" in text and "decode_depth_m (conversion)" in text


def test_bench_quality_reduced(tmp_path, capsys):
    """The quality benchmark in its CI form: two recipes, two seeds, a learning curve, per-class IoU and cover."""
    out = tmp_path / "q"
    rc = main(["bench", "quality", "--recipes", "cls-only", "lr:train.lr=2e-3", "--seeds", "0", "1", "--steps", "2",
               "--train-frames", "4", "--val-frames", "3", "--scene-size", "48", "64", "--size", "32", "48",
               "--eval-every", "1", "--set", "train.batch_size=2", "--set", "train.device=cpu",
               "--set", "model.seg_head_channels=8", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert "| cls-only |" in text and "| lr |" in text and "Per-class IoU" in text
    report = json.loads((out / "quality.json").read_text())
    assert report["seeds"] == [0, 1] and report["val_frames"] == 3
    lr = report["recipes"][1]
    assert float(lr["overrides"]["train.lr"]) == 2e-3
    assert len(lr["mask_per_seed"]) == 2 and all(0 <= m <= 1 for m in lr["mask_per_seed"])
    assert [p["step"] for p in lr["curves"][0]] == [1, 2]
    assert set(lr["mask_iou"]) == {"background", "mug", "box", "ball", "can", "tile", "ring", "bottle", "block"}
    assert 0 <= lr["max_pseudo_cover"] <= 1
    assert (out / "quality.png").stat().st_size > 0
    assert "# deal-ros quality benchmark" in (out / "quality.md").read_text()


def test_bench_quality_refuses_bad_recipe(capsys):
    import pytest

    from deal_ros.cli import UserError
    from deal_ros.lab.recipes import parse_recipe

    with pytest.raises(UserError, match="unknown recipe"):
        parse_recipe("nope")
    with pytest.raises(UserError, match="NAME:KEY=VALUE"):
        parse_recipe("x:")


def test_bench_quality_refuses_held_out_masks_of_another_aspect(scene_bag, other_aspect_gt, tmp_path, capsys):
    rc = main(["bench", "quality", "--recipes", "cls-only", "--seeds", "0", "--steps", "1", "--classes", "mug,box",
               "--bag", str(scene_bag.bag.path), "--gt-dir", str(scene_bag.gt_dir), "--val-bag",
               str(scene_bag.bag.path), "--val-gt", str(other_aspect_gt), "--size", "32", "48",
               "--out", str(tmp_path / "q")])
    assert_user_error(rc, capsys.readouterr().err, "ground truth is 48x48 but its frame is 64x48 (width x height)")


@pytest.mark.parametrize("scene_size", [("0", "0"), ("8", "64"), ("48", "100000")])
def test_bench_quality_refuses_a_scene_size_outside_16_to_4096_in_one_line(scene_size, tmp_path, capsys):
    rc = main(["bench", "quality", "--scene-size", *scene_size, "--out", str(tmp_path / "q")])
    assert_user_error(rc, capsys.readouterr().err, f"--scene-size {' '.join(scene_size)}: height and width must be "
                      "16 to 4096 pixels")
    assert not (tmp_path / "q").exists()
