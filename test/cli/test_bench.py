"""`deal-ros bench`: both measurements run and report their ratios (timings themselves are not checked)."""

from __future__ import annotations

import json
import shutil

import pytest
from clitools import CLASSES, assert_user_error

from deal_ros.cli import main
from deal_ros.lab.experiment import ArmResult

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
    assert lr["family"] == "closeup" and set(lr["mask_quality"]) == set(lr["pseudo_quality"]) == {
        "objects_iou", "right_class", "right_group", "wrong_class", "background_as_object"}
    assert all(v is None or 0 <= v <= 1 for v in [*lr["mask_quality"].values(), *lr["pseudo_quality"].values()])
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


def _stand_in(name, cfg, train_frames, eval_frames, steps, *args, **kwargs):
    """run_arm at once: the report's layout is under test here, not training."""
    names = ["background", *cfg.classes]
    shares = {"objects_iou": 0.8, "right_class": 0.5, "right_group": 0.75, "wrong_class": float("nan"),
              "background_as_object": 0.25}
    return ArmResult(name=name, pseudo_miou=0.25, mask_miou=0.5, pseudo_iou=dict.fromkeys(names, 0.25),
                     mask_iou=dict.fromkeys(names, 0.5), mean_step_time_s=0.1, wall_time_s=1.0,
                     curve=[{"step": steps, "pseudo_miou": 0.25, "mask_miou": 0.5}],
                     pseudo_cover=dict.fromkeys(cfg.classes, 0.1), pseudo_quality=shares, mask_quality=shares), None


def test_bench_quality_all_families_in_one_table(tmp_path, capsys, monkeypatch):
    """Every family is generated (2 frames each, tiny) and gets a family x recipe line with the label-quality
    columns; 'n/a' where nothing was counted."""
    monkeypatch.setattr("deal_ros.lab.experiment.run_arm", _stand_in)
    out = tmp_path / "q"
    rc = main(["bench", "quality", "--scenes", "all", "--recipes", "cls-only", "default", "--steps", "2",
               "--train-frames", "2", "--val-frames", "2", "--scene-size", "32", "40", "--size", "32", "48",
               "--weights", "none", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    report = json.loads((out / "quality.json").read_text())
    families = ["closeup", "tabletop", "clutter", "bin", "shelf", "no_plane"]
    assert [(r["family"], r["name"]) for r in report["recipes"]] == [(f, n) for f in families
                                                                     for n in ("cls-only", "default")]
    assert list(report["families"]) == families and report["recipes_done"] == "12 of 12"
    assert report["families"]["tabletop"]["classes"] == ["mug", "box", "ball"]
    assert report["recipes"][0]["mask_quality"] == {"objects_iou": 0.8, "right_class": 0.5, "right_group": 0.75,
                                                   "wrong_class": None, "background_as_object": 0.25}
    assert "| family | recipe | mask mIoU | pseudo-label mIoU | per seed (mask / pseudo) | objects IoU | right class " \
           "| right class, merged groups count | wrong class | bg as object | max class cover | s/step |" in text
    assert ("| bin | default | 0.500 | 0.250 | 0.500 / 0.250 | 0.80 / 0.80 | 0.50 / 0.50 | 0.75 / 0.75 | n/a / n/a | "
            "0.25 / 0.25 |" in text)
    assert "Per-class IoU on no_plane" in (out / "quality.md").read_text()


def test_bench_quality_scores_a_bag_on_its_own_frames_with_classes_from_its_index(scene_bag, tmp_path, capsys,
                                                                                   monkeypatch):
    """The 'label my own bag' measurement: no held-out bag, the class names from the gt folder's index.json."""
    seen = {}

    def stand_in(name, cfg, train_frames, eval_frames, steps, *args, **kwargs):
        seen.update(classes=list(cfg.classes), same=train_frames is eval_frames, frames=len(train_frames))
        result, trainer = _stand_in(name, cfg, train_frames, eval_frames, steps)
        result.indistinct_classes = [["mug", "box"]]
        return result, trainer

    monkeypatch.setattr("deal_ros.lab.experiment.run_arm", stand_in)
    gt_dir = tmp_path / "data" / "gt"
    shutil.copytree(scene_bag.gt_dir, gt_dir)
    (gt_dir.parent / "index.json").write_text(json.dumps({"classes": ["background", *CLASSES]}))
    out = tmp_path / "q"
    rc = main(["bench", "quality", "--recipes", "default", "--steps", "1", "--bag", str(scene_bag.bag.path),
               "--gt-dir", str(gt_dir), "--size", "32", "48", "--weights", "none", "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    assert seen == {"classes": CLASSES, "same": True, "frames": 6}
    report = json.loads((out / "quality.json").read_text())
    assert report["recipes"][0]["family"] == "bag" and "scored on its own frames" in report["source"]
    assert report["recipes"][0]["indistinct_classes"] == [["mug", "box"]]
    assert "Classes the training tags cannot tell apart on bag (merged groups): {mug, box}." in text


def test_bench_quality_refuses_own_data_without_class_names(scene_bag, tmp_path, capsys):
    rc = main(["bench", "quality", "--bag", str(scene_bag.bag.path), "--gt-dir", str(scene_bag.gt_dir),
               "--out", str(tmp_path / "q")])
    assert_user_error(rc, capsys.readouterr().err, "your own data needs --classes (in the order of the ground-truth "
                      "ids 1, 2, ...) or a classes.txt / index.json in")
    rc = main(["bench", "quality", "--scenes", "bin", "--bag", str(scene_bag.bag.path), "--gt-dir",
               str(scene_bag.gt_dir), "--classes", "mug,box", "--out", str(tmp_path / "q")])
    assert_user_error(rc, capsys.readouterr().err, "--scenes is for the built-in scenes")
