"""`deal-ros train`: end to end on real bags, resume, Ctrl-C, and one-line user errors."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from bagfactory import write_empty_bag, write_rgbd_bag
from clitools import CLASSES, DEAL_ROS, NUM_FRAMES, SIZE, TINY, assert_user_error

from deal_ros.cli import main
from deal_ros.storage.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop


def test_realsense_bag_trains_with_only_tags(trained):
    ckpt = load_checkpoint(trained.checkpoint)
    assert ckpt.step == 2 and ckpt.classes == CLASSES
    assert ckpt.config.model.input_height == 32 and ckpt.config.checkpoint.period_steps == 1
    log = json.loads((trained.out / "train_log.json").read_text())
    assert log["status"] == "finished" and [h["step"] for h in log["history"]] == [1, 2]
    assert log["read"]["frames"] == log["frames_buffered"] == NUM_FRAMES
    assert (trained.out / "loss_curves.png").stat().st_size > 0
    out = trained.result.stdout
    assert f"{NUM_FRAMES} frame(s) from 1 bag(s)" in out and "trained 2 step(s) to step 2" in out
    assert "train:" in trained.result.stderr  # the progress bar


def test_classes_tagged_in_the_same_frames_are_named_at_the_end(trained, realsense_bag, tmp_path, capsys):
    """`--tags "[mug, box]"` tags both in every frame: nothing can tell mug from box, and train says so."""
    assert ("warning: classes mug, box were tagged in exactly the same frames: tags cannot tell them apart (split "
            "at random; pseudo_label.merge_indistinct labels them as mug)") in trained.result.stdout
    groups = load_checkpoint(trained.checkpoint).extra["class_contrast"]
    assert groups == {"num_classes": 2, "patterns": ["11"]}
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "1", "--out", str(tmp_path / "m"),
               "--set", "pseudo_label.merge_indistinct=true", *TINY])
    out = capsys.readouterr().out
    assert rc == 0
    assert "warning: classes mug, box were tagged in exactly the same frames: tags cannot tell them apart " \
           "(labelled as mug)" in out
    apart = write_rgbd_bag(tmp_path / "apart", num_frames=4, size=SIZE,
                           tags_sequence=((0.0, "mug"), (0.15, "mug,box"))).path  # the first frames: mug alone
    assert main(["train", str(apart), "--steps", "1", "--out", str(tmp_path / "a"), *TINY]) == 0
    assert "warning: classes" not in capsys.readouterr().out


def test_resume_from_another_bag_with_tags_topic(trained, scene_bag, tmp_path, capsys):
    out = tmp_path / "model"
    shutil.copytree(trained.out, out)
    rc = main(["train", str(scene_bag.bag.path), "--tags-topic", "/tags", "--steps", "3", "--out", str(out),
               "--resume", "--set", "sync.slop=0.02", "--set", "train.device=cpu"])
    assert rc == 0, capsys.readouterr().err
    ckpt = load_checkpoint(out / "model.safetensors")
    assert ckpt.step == 3 and ckpt.classes == CLASSES
    assert ckpt.config.model.input_height == 32  # the resumed checkpoint's config, not the defaults
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [1, 2, 3] and log["resumed_from_step"] == 2
    assert "trained 1 step(s) to step 3" in capsys.readouterr().out


def test_held_out_bag_is_scored_while_training(realsense_bag, scene_bag, tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "2", "--out", str(out),
               "--val-bag", str(scene_bag.bag.path), "--val-gt", str(scene_bag.gt_dir), "--val-every", "1", *TINY])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "step 1: held-out mask mIoU" in captured.out and "step 2: held-out mask mIoU" in captured.out
    validation = json.loads((out / "train_log.json").read_text())["validation"]
    assert validation["frames"] == NUM_FRAMES and [p["step"] for p in validation["curve"]] == [1, 2]
    assert all(0 <= p["mask_miou"] <= 1 and 0 <= p["pseudo_miou"] <= 1 for p in validation["curve"])
    assert set(validation["curve"][-1]["mask_iou"]) == {"background", *CLASSES}
    assert (out / "val_miou.png").stat().st_size > 0
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--out", str(tmp_path / "x"),
               "--val-bag", str(scene_bag.bag.path), *TINY])
    assert rc == 2 and "--val-bag and --val-gt go together" in capsys.readouterr().err


def test_train_says_when_masks_became_trusted(realsense_bag, tmp_path, capsys):
    out = tmp_path / "model"
    trust = ["--set", "loss.seg_warmup_steps=1", "--set", "trust.min_agreement=0", "--set", "trust.window_steps=1",
             "--set", "trust.hold_steps=1"]  # trusted on the first step with pseudo-labels (step 2)
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "3", "--out", str(out), *TINY,
               *trust])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "step 2: masks trusted since step 2: head agreement" in captured.out
    history = json.loads((out / "train_log.json").read_text())["history"]
    assert [h["masks_trusted"] for h in history] == [False, True, True] and history[0]["head_agreement"] is None
    assert 0 <= history[1]["head_agreement"] <= 1
    assert load_checkpoint(out / "model.safetensors").extra["trust"]["trusted"]  # a resume keeps the verdict


def test_held_out_masks_of_another_aspect_are_refused_not_stretched(realsense_bag, scene_bag, other_aspect_gt,
                                                                    tmp_path, capsys):
    rc = main(["train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "1", "--out", str(tmp_path / "m"),
               "--val-bag", str(scene_bag.bag.path), "--val-gt", str(other_aspect_gt), *TINY])
    assert_user_error(rc, capsys.readouterr().err, "000000.png: ground truth is 48x48 but its frame is 64x48")
    assert not (tmp_path / "m" / "model.safetensors").exists()


def _stop_training(realsense_bag, tmp_path, *signals: signal.Signals) -> tuple[subprocess.Popen, str, Path]:
    """Start a long `deal-ros train`, send `signals` back to back once step 1 is done; (process, stderr, out)."""
    out = tmp_path / "model"
    err_path = tmp_path / "stderr.txt"
    with err_path.open("w") as err:
        # A runner that starts the suite in the background (`cmd &`) ignores SIGINT, and children inherit
        # that: give the command the default disposition a terminal's Ctrl-C would meet.
        proc = subprocess.Popen([DEAL_ROS, "train", str(realsense_bag.path), "--tags", "mug,box", "--steps",
                                 "100000", "--out", str(out), *TINY], stdout=subprocess.PIPE, stderr=err, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            deadline = time.monotonic() + 120
            while "1/100000" not in err_path.read_text() and time.monotonic() < deadline:
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.2)
            for signum in signals:
                proc.send_signal(signum)
            proc.wait(timeout=120)  # a fresh venv builds matplotlib's font cache on first use
        finally:
            if proc.poll() is None:
                proc.kill()
    return proc, err_path.read_text(), out


def _assert_saved(out: Path) -> None:
    assert load_checkpoint(out / "model.safetensors").step >= 1
    assert json.loads((out / "train_log.json").read_text())["status"] == "interrupted"


def test_ctrl_c_saves_and_exits_130(realsense_bag, tmp_path):
    proc, text, out = _stop_training(realsense_bag, tmp_path, signal.SIGINT)
    assert proc.returncode == 130, text
    assert "Traceback" not in text and "interrupted at step" in text
    _assert_saved(out)


def test_sigterm_saves_like_ctrl_c_and_exits_143(realsense_bag, tmp_path):
    """timeout, docker stop, systemd and Slurm send SIGTERM (was: exit 143, no word, nothing saved)."""
    proc, text, out = _stop_training(realsense_bag, tmp_path, signal.SIGTERM)
    assert proc.returncode == 143, text
    assert "Traceback" not in text and "stopped by SIGTERM at step" in text and "checkpoint saved to" in text
    _assert_saved(out)


def test_a_second_signal_does_not_abort_the_final_save(realsense_bag, tmp_path):
    """Ctrl-C then SIGTERM at once (was: exit 143, only 'interrupted', nothing saved): the first one decides."""
    proc, text, out = _stop_training(realsense_bag, tmp_path, signal.SIGINT, signal.SIGTERM)
    assert proc.returncode == 130, text
    assert "SIGTERM ignored: still stopping after SIGINT" in text and "checkpoint saved to" in text, text
    assert "Traceback" not in text
    _assert_saved(out)


@pytest.fixture(scope="module")
def late_tags_bag(tmp_path_factory):
    """Tags arrive only after the last frame: every frame is skipped for want of tags."""
    return write_rgbd_bag(tmp_path_factory.mktemp("late") / "bag", num_frames=3, size=SIZE,
                          tags_sequence=((30.0, "mug"),)).path


def _train(args, capsys):
    rc = main(["train", *args, "--steps", "1", *TINY])
    return rc, capsys.readouterr().err


def test_user_errors(realsense_bag, late_tags_bag, tmp_path, capsys):
    bag = str(realsense_bag.path)
    out = ["--out", str(tmp_path / "m")]
    assert_user_error(*_train([str(tmp_path / "nope"), "--tags", "mug", *out], capsys), "bag not found")
    assert_user_error(*_train([bag, "--tags", "mug", "--rgb-topic", "/nope", *out], capsys),
                      "RGB topic /nope is not in the bag", "/camera/color/image_raw")
    assert_user_error(*_train([bag, "--tags", "mug,cup", "--classes", "mug,box", *out], capsys),
                      "unknown tag(s) 'cup'")
    assert_user_error(*_train([bag, *out], capsys), "no tags", "--tags")
    empty = write_empty_bag(tmp_path / "empty")
    assert_user_error(*_train([str(empty), "--tags", "mug", *out], capsys), "contains no messages")
    corrupt = write_rgbd_bag(tmp_path / "corrupt", num_frames=2, size=SIZE).path
    (corrupt / "corrupt.db3").write_bytes(b"garbage" * 100)
    assert_user_error(*_train([str(corrupt), "--tags", "mug", *out], capsys), "truncated or corrupt")
    assert_user_error(*_train([str(late_tags_bag), *out], capsys), "no usable frames", "no_tags 3")
    schedule = tmp_path / "ranges.yaml"
    schedule.write_text("- {start_s: 0, end_s: 1, tags: 'mug, cat'}\n")
    assert_user_error(*_train([bag, "--tags-yaml", str(schedule), "--classes", "mug", *out], capsys),
                      "unknown tag(s) 'cat'")
    assert_user_error(*_train([bag, "--tags", "mug", "--set", "sync.slop=-1", *out], capsys), "sync.slop",
                      "must be in [0, 5]")
    assert_user_error(*_train([bag, "--tags", "mug", "--set", "train.batch_size", *out], capsys), "key=value")
    assert_user_error(*_train([bag, "--tags", "mug", "--set", "model.nope=1", *out], capsys), "model.nope")
    assert_user_error(*_train([bag, "--tags", "mug", "--resume", "--out", str(tmp_path / "none")], capsys),
                      "--resume", "checkpoint not found")


def test_float_depth_in_millimetres_is_refused_or_converted_by_the_setting(tmp_path, capsys):
    """32FC1 depth in millimetres: one line naming the unit (was: exit 0, every depth pixel a hole in the buffer)."""
    metres = write_rgbd_bag(tmp_path / "m", num_frames=NUM_FRAMES, size=SIZE)
    frames = [(rgb, depth * 1000) for rgb, depth in zip(metres.rgb, metres.depth_m, strict=True)]
    bag = str(write_rgbd_bag(tmp_path / "mm", num_frames=NUM_FRAMES, frames=frames, depth_encoding="32FC1").path)
    rc, err = _train([bag, "--tags", "mug,box", "--out", str(tmp_path / "refused")], capsys)
    assert_user_error(rc, err, "cannot be metres (likely millimetres", "depth.float_unit=mm")
    out = tmp_path / "converted"
    rc, err = _train([bag, "--tags", "mug,box", "--out", str(out), "--set", "depth.float_unit=mm"], capsys)
    assert rc == 0, err
    assert load_checkpoint(out / "model.safetensors").config.depth.float_unit == "mm"  # label reads it alike


@pytest.mark.parametrize(("flag", "spelling"), [("--min-gap", "--set keyframe.min_interval_s=S"),
                                                ("--min-motion", "--set keyframe.motion_threshold=M"),
                                                ("--slop", "--set sync.slop=S")])
def test_replaced_flags_are_refused_naming_the_set_key(flag, spelling, realsense_bag, tmp_path, capsys):
    rc = main(["train", str(realsense_bag.path), "--tags", "mug", flag, "0.5", "--out", str(tmp_path / "m")])
    assert_user_error(rc, capsys.readouterr().err, f"{flag} is gone", spelling)
    assert not (tmp_path / "m").exists()  # refused while parsing, before any work
    assert flag not in subprocess.run([DEAL_ROS, "train", "--help"], capture_output=True, text=True).stdout


def _config(*argv):
    from deal_ros.cli import build_parser
    from deal_ros.cli.train import build_config

    args = build_parser("train").parse_args(["train", "bag", "--tags", "mug,box", *argv])
    return build_config(args, args.tags)


def test_onboard_config_gates_and_pairs_as_the_node(tmp_path):
    """`--config config/onboard.yaml` takes the node's keyframe gate and synchroniser; without it every frame is a
    keyframe (the offline default), and --set or a config naming a keyframe key takes that key."""
    import yaml

    from deal_ros.config import KeyframeConfig, SyncConfig
    from deal_ros.online.parameters import config_from_parameters, flatten_parameters

    onboard = Path(__file__).resolve().parents[2] / "config" / "onboard.yaml"
    parameters = flatten_parameters(yaml.safe_load(onboard.read_text())["/**"]["ros__parameters"])
    node = config_from_parameters(parameters)  # the config of a node started with this file
    cfg = _config("--config", str(onboard))
    assert cfg.keyframe == node.keyframe and cfg.sync == node.sync
    assert node.keyframe == KeyframeConfig() and node.keyframe.min_interval_s == 0.5 and node.sync == SyncConfig()
    every_frame = _config()
    assert every_frame.keyframe == KeyframeConfig(0.0, 0.0, 0.0) and every_frame.sync == SyncConfig()
    gated = _config("--set", "keyframe.min_interval_s=0.25", "--set", "sync.queue_size=3")
    assert gated.keyframe == KeyframeConfig(0.25, 0.0, 0.0) and gated.sync.queue_size == 3
    plain = tmp_path / "plain.yaml"
    plain.write_text("classes: [mug, box]\nkeyframe: {motion_threshold: 0.1}\nsync: {slop: 0.02}\n")
    named = _config("--config", str(plain))
    assert named.keyframe == KeyframeConfig(0.0, 0.0, 0.1) and named.sync.slop == 0.02


def test_train_decides_on_a_bag_as_the_node(tmp_path, capsys):
    """An RGB/depth size mismatch is refused with the node's words (never resized); tags written as the README's
    parameter syntax on the tags topic are read as the node reads them."""
    from types import SimpleNamespace

    from deal_ros.io.pairs import check_pair

    unaligned = write_rgbd_bag(tmp_path / "unaligned", num_frames=3, size=SIZE, depth_size=(24, 32)).path
    header = SimpleNamespace(frame_id="f")
    node = check_pair(SimpleNamespace(encoding="rgb8", width=SIZE[1], height=SIZE[0], header=header),
                      SimpleNamespace(encoding="16UC1", width=32, height=24, header=header))
    rc, err = _train([str(unaligned), "--tags", "mug", "--out", str(tmp_path / "u")], capsys)
    assert_user_error(rc, err, "size_mismatch 3", node.errors[0][:40])
    listed = write_rgbd_bag(tmp_path / "listed", num_frames=4, size=SIZE, tags_sequence=[(0.0, "[mug, 'box']")]).path
    out = tmp_path / "l"
    assert main(["train", str(listed), "--steps", "1", "--out", str(out), *TINY]) == 0, capsys.readouterr().err
    assert load_checkpoint(out / "model.safetensors").classes == CLASSES
    assert json.loads((out / "train_log.json").read_text())["read"]["frames"] == 4
