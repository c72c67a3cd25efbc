"""The fault suite: file-system faults, config traps and bad data, replayed through the installed `deal-ros`.

Every case checks the exit code, the one error line (never a traceback) and the state of every file
afterwards. The faults are real: read-only folders (chmod, or a read-only bind mount in a user
namespace when the tests run as root, where chmod stops nothing), a file size limit (RLIMIT_FSIZE
with SIGXFSZ ignored, as `ulimit -f` does) and a disk that fills up during a run (a small tmpfs in a
user namespace). Cases needing a namespace are skipped, saying why, where the kernel forbids them.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from bagfactory import RS_DEPTH, RS_RGB, write_rgbd_bag
from clitools import DEAL_ROS, SIZE, TINY, assert_user_error

from deal_ros.storage.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # end-to-end: `pytest -m "not slow"` is the fast loop

NUM = 4
"""Frames of the bags made here."""
PROGRESS = re.compile(r"train:\s+\d+%")
"""The training progress bar: its absence means no step was run."""


def run(*args: str, preexec_fn=None, env: dict[str, str] | None = None, prefix: tuple[str, ...] = (),
        timeout: float = 300) -> subprocess.CompletedProcess:
    """The installed command as a user runs it (optionally under a file size limit or in a namespace)."""
    return subprocess.run([*prefix, DEAL_ROS, *args], capture_output=True, text=True, timeout=timeout, check=False,
                          preexec_fn=preexec_fn, env=env)


def user_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 2, one 'deal-ros CMD: error: ...' line naming the problem, no traceback; returns that line."""
    assert_user_error(result.returncode, result.stderr, *needles)
    return next(line for line in result.stderr.splitlines() if line.startswith("deal-ros "))


def tree(folder: Path) -> dict[str, str]:
    """Every file below `folder` (relative path -> sha1 of its bytes): the state a fault must not change."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def file_size_limit(limit_bytes: int):
    """preexec_fn: what `ulimit -f` does (writes beyond the limit fail with EFBIG instead of killing)."""
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, resource.RLIM_INFINITY))
    return apply


@functools.cache
def namespaces() -> str | None:
    """None when `unshare -r -m` can mount in a user namespace, else why not (for the skip message)."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    script = 'd=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs "$d" && umount "$d"; r=$?; rmdir "$d"; exit $r'
    probe = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], capture_output=True, text=True, check=False)
    return None if probe.returncode == 0 else f"no user mount namespaces here ({probe.stderr.strip()})"


def run_read_only(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """Run with `folder` read-only: chmod for a normal user; root ignores modes, so a read-only bind mount."""
    if os.geteuid() != 0:
        mode = folder.stat().st_mode
        folder.chmod(0o555)
        try:
            return run(*args)
        finally:
            folder.chmod(mode)
    if namespaces() is not None:
        pytest.skip(f"running as root, where chmod does not stop writes, and {namespaces()}")
    script = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" && shift && exec "$@"'
    return run(*args, prefix=("unshare", "-r", "-m", "sh", "-c", script, "sh", str(folder)))


def resumable(trained, tmp_path: Path) -> Path:
    """A copy of the session's trained folder (step 2) to resume from."""
    out = tmp_path / "model"
    shutil.copytree(trained.out, out)
    return out


# ------------------------------------------------------------------------------------------------
# Output folders


def test_outputs_that_are_files_or_lie_below_files(realsense_bag, tmp_path):
    bag = str(realsense_bag.path)
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    user_error(run("train", bag, "--tags", "mug,box", "--out", str(a_file), *TINY),
               f"--out folder {a_file} is a file, not a folder")
    user_error(run("train", bag, "--tags", "mug,box", "--out", str(a_file / "model"), *TINY),
               f"lies below the file {a_file}")
    folder = tmp_path / "results"
    folder.mkdir()
    user_error(run("eval", str(tmp_path), str(tmp_path), "--json", str(folder)), f"--json {folder} is a folder")
    assert a_file.read_text() == "keep me" and list(folder.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt", "results"]


def test_read_only_out_is_refused_before_any_training(trained, realsense_bag, tmp_path):
    out = resumable(trained, tmp_path)
    before = tree(out)
    result = run_read_only(out, "train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "5", "--out",
                           str(out), "--resume", *TINY)
    user_error(result, f"--out folder {out} is not writable")
    assert not PROGRESS.search(result.stderr)  # refused before the first step, not after the whole budget
    assert tree(out) == before


def test_a_file_size_limit_too_small_for_a_checkpoint_is_refused_before_training(trained, realsense_bag, tmp_path):
    out = resumable(trained, tmp_path)
    before = tree(out)
    result = run("train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "5", "--out", str(out),
                 "--resume", *TINY, preexec_fn=file_size_limit(1_000_000))
    user_error(result, "the file size limit (ulimit -f) is 1.0 MB but a checkpoint needs about")
    assert not PROGRESS.search(result.stderr) and tree(out) == before


DISK_FILLER = r'''
import json, os, shutil, signal, subprocess, sys, time
out, snapshot, source, wait_for, cmd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", out], check=True)
shutil.copytree(source, out, dirs_exist_ok=True)  # a good 27 MB checkpoint: room for one more, as the start checks
err_path = snapshot + ".stderr"
with open(err_path, "w") as err:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while wait_for not in open(err_path).read() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    with open(os.path.join(out, "filler"), "wb") as filler:  # the disk fills up while training runs
        try:
            while True:
                filler.write(bytes(1 << 20))
                filler.flush()
        except OSError:
            pass
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the save of the trained steps meets the full disk
    rc = proc.wait(240)
shutil.copytree(out, snapshot, ignore=shutil.ignore_patterns("filler"))
print(json.dumps({"rc": rc, "stdout": proc.stdout.read()}))
'''


def test_a_disk_that_fills_up_during_training_loses_no_trained_step(trained, realsense_bag, tmp_path):
    if namespaces() is not None:
        pytest.skip(f"a full disk needs a small tmpfs: {namespaces()}")
    source = resumable(trained, tmp_path)
    before = tree(source)
    out, snapshot, rescue = tmp_path / "full", tmp_path / "after", tmp_path / "tmp"
    out.mkdir()
    rescue.mkdir()
    cmd = [DEAL_ROS, "train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "100000", "--out", str(out),
           "--resume", "--checkpoint-every", "0", *TINY]
    driver = subprocess.run(["unshare", "-r", "-m", sys.executable, "-c", DISK_FILLER, str(out), str(snapshot),
                             str(source), "3/100000", *cmd], capture_output=True, text=True, timeout=600,
                            env={**os.environ, "TMPDIR": str(rescue)}, check=True)
    result = subprocess.CompletedProcess(cmd, json.loads(driver.stdout)["rc"], "",
                                         (snapshot.parent / "after.stderr").read_text())
    line = user_error(result, f"cannot save to {out}: {out}/model.safetensors: No space left on device (ENOSPC)",
                      "(tried 3 times)", f"were saved to {rescue}/deal_ros-rescue-")
    rescued = next(rescue.glob("deal_ros-rescue-*"))
    assert f"--resume --out {rescued}" in line
    step = load_checkpoint(rescued / "model.safetensors").step
    log = json.loads((rescued / "train_log.json").read_text())
    assert step >= 3 and log["status"] == "interrupted" and log["checkpoint_step"] == step
    assert [h["step"] for h in log["history"]][-1] == step
    assert tree(snapshot) == before  # the good checkpoint and its log untouched, no temporary left on the disk


# ------------------------------------------------------------------------------------------------
# Resume, config traps, divergence


def test_resume_with_a_ros_parameter_file_a_cut_log_and_stale_temporaries(trained, realsense_bag, tmp_path):
    out = resumable(trained, tmp_path)
    cut = (out / "train_log.json").read_bytes()[:300]
    (out / "train_log.json").write_bytes(cut)  # what an older version left when killed mid-write
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True).stdout.strip()
    stale = out / f".model.safetensors.{dead}-0123abcd.tmp"
    stale.write_bytes(bytes(1000))
    params = tmp_path / "deal.yaml"  # dotted keys and exponents as written in ROS 2 parameter files
    params.write_text("deal_trainer:\n  ros__parameters:\n    sync.slop: 0.05\n"
                      "    classes: [mug, box]\n    model.input_height: 32\n    model.input_width: 48\n"
                      "    model.seg_head_channels: 8\n    train.batch_size: 2\n    train.device: cpu\n"
                      "    train.lr: 1e-4\n    checkpoint:\n      period_steps: 0\n")
    result = run("train", str(realsense_bag.path), "--tags", "mug,box", "--config", str(params), "--resume",
                 "--steps", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "applied to the optimizer: train.lr 0.002 -> 0.0001" in result.stdout
    assert "train_log.json is unreadable" in result.stderr and "Traceback" not in result.stderr
    ckpt = load_checkpoint(out / "model.safetensors")
    assert ckpt.step == 3 and ckpt.config.train.lr == 1e-4
    assert sorted(g["lr"] for g in ckpt.optimizer_state["param_groups"]) == pytest.approx([1e-5, 1e-4])
    log = json.loads((out / "train_log.json").read_text())
    assert log["status"] == "finished" and log["checkpoint_step"] == 3 and [h["step"] for h in log["history"]] == [3]
    assert (out / "train_log.json.unreadable").read_bytes() == cut  # moved aside, not lost
    assert not stale.exists() and not list(out.glob(".*"))


def test_bad_numbers_and_misspelled_sections_are_refused_before_any_work(realsense_bag, tmp_path):
    bag, out = str(realsense_bag.path), tmp_path / "model"
    args = ["train", bag, "--tags", "mug,box", "--out", str(out), *TINY]
    user_error(run(*args, "--set", "train.lr=.inf"), "config 'train.lr': must be a finite number, got inf")
    verbose = run("-v", *args, "--set", "train.lr=nan")  # -v: the traceback too, then the same one line
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1].startswith("deal-ros train: error: config 'train.lr'")
    user_error(run(*args, "--set", "train.batch_size=4", "--set", "train={lr: 0.1, nope: 1}"),
               "config 'train.nope': unknown key")
    params = tmp_path / "deal.yaml"
    params.write_text("/**:\n  ros__parameters:\n    classes: [mug, box]\n    trian:\n      lr: 0.1\n")
    user_error(run(*args, "--config", str(params)), "ros__parameters.trian': unknown key")
    assert not out.exists()


def test_training_that_diverges_keeps_the_good_checkpoint(trained, realsense_bag, tmp_path):
    out = resumable(trained, tmp_path)
    before = load_checkpoint(out / "model.safetensors")
    checkpoint = (out / "model.safetensors").read_bytes()
    result = run("train", str(realsense_bag.path), "--tags", "mug,box", "--steps", "6", "--out", str(out), "--resume",
                 "--checkpoint-every", "1", *TINY, "--set", "train.optimizer=sgd", "--set", "train.grad_clip=0",
                 "--set", "train.lr=1", "--set", "loss.deal.enabled=true", "--set", "loss.deal.weight=1e20")
    user_error(result, "training diverged at step", f"{out}/model.safetensors (step {before.step}) is kept",
               "says 'diverged'")
    assert (out / "model.safetensors").read_bytes() == checkpoint
    log = json.loads((out / "train_log.json").read_text())
    assert log["status"] == "diverged" and log["checkpoint_step"] == before.step
    assert not list(out.glob(".*"))


# ------------------------------------------------------------------------------------------------
# Degenerate and rejected data


def _bag(path: Path, storage: str = "sqlite3", depth_m: float | None = None, **kwargs) -> str:
    rng = np.random.default_rng(0)
    frames = None
    if depth_m is not None:
        frames = [(rng.integers(0, 256, (*SIZE, 3), dtype=np.uint8), np.full(SIZE, depth_m, np.float32))
                  for _ in range(NUM)]
    return str(write_rgbd_bag(path, storage=storage, num_frames=NUM, size=SIZE, frames=frames, **kwargs).path)


def test_degenerate_depth_and_rejected_frames_are_named_and_info_agrees_with_train(tmp_path):
    no_depth = _bag(tmp_path / "no_depth", depth_m=0.0)
    saturated = _bag(tmp_path / "saturated", "mcap", depth_m=65.535)  # 16UC1 65535 everywhere
    swapped = _bag(tmp_path / "swapped", rgb_topic=RS_DEPTH, depth_topic=RS_RGB)  # colour topic holds 16UC1
    cat = _bag(tmp_path / "cat", "mcap", tags_sequence=((0.0, "mug,cat"),))
    info = run("info", no_depth, saturated, swapped)
    assert info.returncode == 1 and "Traceback" not in info.stderr, info.stderr
    assert info.stdout.count("verdict: NOT USABLE") == 3
    assert "no usable RGB-D frame: depth_no_valid 4 (e.g. " in info.stdout
    assert "(all 0; 0, NaN and inf mean no measurement)" in info.stdout
    assert "depth_constant 4" in info.stdout and "depth is 65.535 m at every valid pixel" in info.stdout
    assert "has encoding '16UC1', not a colour encoding" in info.stdout
    out = tmp_path / "model"
    line = user_error(run("train", no_depth, saturated, swapped, cat, "--classes", "mug,box", "--out", str(out),
                          *TINY), "no usable frames", "0 frame(s) read")
    assert "depth_no_valid 4 (e.g. /camera/aligned_depth_to_color/image_raw at " in line
    assert "depth_constant 4 (e.g. " in line and "65.535 m at every valid pixel" in line
    assert "decode_error 4 (e.g. topic /camera/color/image_raw (encoding '16UC1'): this is depth, not colour" in line
    assert "unknown_tag 4 (e.g. unknown tag(s) 'cat'; known classes: ['mug', 'box']" in line
    assert not (out / "model.safetensors").exists() and not (out / "train_log.json").exists()


# ------------------------------------------------------------------------------------------------
# Labelling


def test_a_failed_label_keeps_the_previous_result_and_does_not_block_a_rerun(trained, labelled, tmp_path):
    out = tmp_path / "labels"
    shutil.copytree(labelled.out, out, ignore=shutil.ignore_patterns("labelled_bag"))  # a previous good result
    before = tree(out)
    bag = _bag(tmp_path / "cat", "mcap", tags_sequence=((0.0, "mug,cat"),))
    args = ["label", str(trained.checkpoint), bag, "--out", str(out), "--device", "cpu"]
    full = run(*args, preexec_fn=file_size_limit(20_000))  # the labelled bag outgrows the limit: a full disk
    user_error(full, f"cannot write the labels into {out}: File too large (EFBIG)",
               f"what {out} held before is unchanged")
    assert tree(out) == before and not (out / "labelled_bag").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left to block a rerun

    again = run(*args)
    assert again.returncode == 0, again.stderr
    assert "unknown tag(s) 'cat'" in again.stderr  # named; those frames get masks, not pseudo-labels
    assert sorted(p.name for p in (out / "mask").iterdir()) == [f"{i:06d}.png" for i in range(NUM)]
    assert list((out / "pseudo_label").iterdir()) == []
    assert [f["tags"] for f in json.loads((out / "frames.json").read_text())] == [None] * NUM
    assert (out / "labelled_bag" / "metadata.yaml").is_file()
    assert json.loads((out / "classes.json").read_text())["step"] == load_checkpoint(trained.checkpoint).step


# ------------------------------------------------------------------------------------------------
# Ctrl-C


def _wait_until_mapped(proc: subprocess.Popen, library: str, timeout_s: float = 120) -> None:
    """Return once the process has loaded `library` (it is inside the command's imports), or has ended."""
    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() < deadline:
        if library in maps.read_text():
            return
        time.sleep(0.002)


def test_ctrl_c_while_the_command_imports_exits_130_without_a_traceback(realsense_bag, tmp_path):
    if not Path("/proc/self/maps").exists():
        pytest.skip("needs /proc to see when the command is importing")
    for after_s in (0.0, 0.5):  # as torch starts loading, and in the middle of it
        proc = subprocess.Popen([DEAL_ROS, "train", str(realsense_bag.path), "--tags", "mug,box", "--out",
                                 str(tmp_path / "model"), *TINY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        _wait_until_mapped(proc, "libtorch")
        time.sleep(after_s)
        for _ in range(3):  # a SIGINT can be consumed inside a C extension's start-up: press Ctrl-C again
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=30)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            proc.kill()
            _, err = proc.communicate()
        assert proc.returncode == 130, (after_s, err)
        assert "Traceback" not in err and "interrupted" in err, (after_s, err)
