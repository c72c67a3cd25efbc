"""deal_ros.storage.files: atomic writes, checked folders, stale temporaries and the rescue folder, on real files."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from deal_ros.errors import OutputError, describe_os_error
from deal_ros.storage.files import (
    atomic_write,
    atomic_write_text,
    check_free_space,
    check_output_dir,
    remove_stale_temp_files,
    staging_dir,
    temp_name,
    write_or_rescue,
)


def _dead_pid() -> int:
    """The pid of a process that has exited (so a temporary named after it is stale)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def test_atomic_write_replaces_whole_files_and_leaves_nothing_behind(tmp_path) -> None:
    target = tmp_path / "train_log.json"
    atomic_write_text(target, '{"step": 1}')
    old = os.umask(0o022)
    try:
        atomic_write_text(target, '{"step": 2}')
    finally:
        os.umask(old)
    assert target.read_text() == '{"step": 2}' and stat.S_IMODE(target.stat().st_mode) == 0o644

    def fails(tmp) -> None:
        tmp.write_text("half")
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    with pytest.raises(OSError):
        atomic_write(target, fails)
    assert target.read_text() == '{"step": 2}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train_log.json"]


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path) -> None:
    dead, live = _dead_pid(), os.getpid()
    stale_file = tmp_path / f".model.safetensors.{dead}-0123abcd.tmp"
    stale_file.write_bytes(b"x" * 100)
    stale_dir = tmp_path / f".label.{dead}-89abcdef.tmp"
    (stale_dir / "mask").mkdir(parents=True)
    stale_png = tmp_path / f".loss_curves.png.{dead}-00000000.tmp.png"
    stale_png.write_bytes(b"png")
    live_file = temp_name(tmp_path / "model.safetensors")
    live_file.write_bytes(b"being written")
    legacy_old = tmp_path / ".model.safetensors.k2j4_x9a.tmp"  # tempfile.mkstemp name of earlier versions
    legacy_old.write_bytes(b"27 MB once")
    os.utime(legacy_old, (time.time() - 3600, time.time() - 3600))
    legacy_new = tmp_path / ".model.safetensors.abcdefgh.tmp"
    legacy_new.write_bytes(b"maybe still written")
    user_file = tmp_path / ".notes.tmp"
    user_file.write_text("not ours")

    removed = remove_stale_temp_files(tmp_path)
    assert sorted(removed) == sorted([stale_file, stale_dir, stale_png, legacy_old])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live_file.name, legacy_new.name, user_file.name])
    assert str(live) in live_file.name



def test_safetensors_own_temporaries_left_by_a_killed_save_are_removed(tmp_path) -> None:
    """safetensors' save_file writes .tmpXXXXXX first: a SIGKILL during a save left 26.6 MB that nothing removed."""
    header = (16).to_bytes(8, "little") + b'{"__metadata__":{}}'
    old = time.time() - 3600
    leftover = tmp_path / ".tmpa8Zk2Q"
    leftover.write_bytes(header + b"\0" * 100)
    fresh = tmp_path / ".tmpQ2kZ8a"  # maybe a save still running
    fresh.write_bytes(header)
    foreign = tmp_path / ".tmpB0b0b0"  # another program's temporary of the same name form
    foreign.write_bytes(b"not a checkpoint")
    for path in (leftover, foreign):
        os.utime(path, (old, old))
    assert remove_stale_temp_files(tmp_path) == [leftover]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, foreign.name])


def test_a_failed_write_names_the_target(tmp_path) -> None:
    """A write on a full disk raises an OSError without a file name: the message must still say where."""
    target = tmp_path / "model.onnx"
    target.write_bytes(b"the previous, valid model")

    def full_disk(tmp) -> None:
        with open(tmp, "wb") as handle:
            handle.write(b"half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError) as info:
        atomic_write(target, full_disk)
    assert info.value.filename == str(target)
    assert describe_os_error(info.value) == f"{target}: No space left on device (ENOSPC)"
    assert target.read_bytes() == b"the previous, valid model"
    assert [p.name for p in tmp_path.iterdir()] == ["model.onnx"]

def test_output_folder_checks_name_the_problem(tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("keep")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_dir(a_file, "--out folder")
    with pytest.raises(OutputError, match=f"lies below the file {a_file}"):
        check_output_dir(a_file / "sub", "--out folder")
    assert a_file.read_text() == "keep"
    created = check_output_dir(tmp_path / "new" / "deeper", "--out folder")
    assert created.is_dir() and list(created.iterdir()) == []  # the probe is gone
    with pytest.raises(OutputError, match=r"has \d+\.\d MB free but a checkpoint needs about"):
        check_free_space(tmp_path, 10**18, "--out folder", "a checkpoint")


def test_a_write_that_keeps_failing_goes_to_a_rescue_folder(tmp_path, monkeypatch) -> None:
    """A real fault: the target folder is replaced by a file while the run is going (every write fails)."""
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr("tempfile.tempdir", None)  # re-read TMPDIR
    out = tmp_path / "out"
    out.write_text("not a folder any more")
    writes: list[str] = []

    def log_writer(path) -> None:
        writes.append(str(path))
        atomic_write_text(path, "log")

    written = write_or_rescue(out, {"train_log.json": log_writer, "notes.txt": lambda p: p.write_text("n")},
                              delay_s=0.01)
    assert written.rescued and "Not a directory (ENOTDIR)" in written.failure
    assert written.folder.parent == tmp_path / "tmp" and written.folder.name.startswith("deal_ros-rescue-")
    assert (written.folder / "train_log.json").read_text() == "log" and (written.folder / "notes.txt").exists()
    assert writes.count(str(out / "train_log.json")) == 3  # retried before giving up on the folder
    assert out.read_text() == "not a folder any more"
    good = write_or_rescue(tmp_path / "tmp", {"a.txt": lambda p: atomic_write_text(p, "a")})
    assert not good.rescued and (tmp_path / "tmp" / "a.txt").read_text() == "a"


def test_staging_folders_are_ours(tmp_path) -> None:
    stage = staging_dir(tmp_path, "label")
    assert stage.is_dir() and stage.name.startswith(".label.") and remove_stale_temp_files(tmp_path) == []
