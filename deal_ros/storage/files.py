"""Writing outputs so that nothing is lost: atomic files, checked folders, retries and a rescue folder.

Every file deal_ros writes goes through :func:`atomic_write`: written beside the target under a
temporary name that carries the writer's pid (``.NAME.PID-XXXXXXXX.tmp``), fsynced and renamed over
the target, so a reader never sees a torn file and a crash leaves the old file intact.
:func:`remove_stale_temp_files` removes what a killed writer left. :func:`check_output_dir` runs
before any work, so a read-only or misnamed folder fails in the first second, not after training.
:func:`write_or_rescue` retries a failing write and then writes to a rescue folder it names.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from deal_ros.errors import OutputError, describe_os_error, os_error_cause

__all__ = [
    "Written",
    "atomic_write",
    "atomic_write_text",
    "check_free_space",
    "check_output_dir",
    "refuse_non_folder",
    "remove_stale_temp_files",
    "rescue_folders",
    "retry",
    "staging_dir",
    "temp_name",
    "write_or_rescue",
]

T = TypeVar("T")

_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.tmp(\.[A-Za-z0-9]+)?$")
"""Temporary files and folders of ours: .NAME.PID-HEX.tmp (see temp_name)."""
_LEGACY = re.compile(r"^\.(?P<name>.+\.safetensors)\.[A-Za-z0-9_]{8}\.tmp$")
"""Checkpoint temporaries of earlier versions (tempfile.mkstemp names, no pid)."""
_SAFETENSORS_OWN = re.compile(r"^\.tmp[A-Za-z0-9]{6}$")
"""What safetensors' save_file writes before its rename (Rust tempfile names), left when its writer was killed;
earlier versions of deal_ros saved through it. Removed only when it holds a safetensors header (see
_is_safetensors): the name alone could be another program's."""
LEGACY_AGE_S = 600.0
"""A legacy temporary older than this is a leftover (no live writer takes 10 minutes per checkpoint)."""
RESCUE_PREFIX = "deal_ros-rescue-"
SAVE_ATTEMPTS = 3
"""Tries of a failing write before write_or_rescue turns to a rescue folder."""


def temp_name(target: str | Path, suffix: str = "") -> Path:
    """A fresh temporary path beside `target`: .NAME.PID-HEX.tmp[SUFFIX] (the pid tells a later run it is stale).

    `suffix` (e.g. '.png') is for writers that pick the format from the file name.
    """
    target = Path(target)
    return target.parent / f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp{suffix}"


def _fsync_dir(folder: Path) -> None:
    """Make a rename durable; some file systems cannot fsync a folder, which is not an error."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(target: str | Path, write: Callable[[Path], object], suffix: str = "") -> Path:
    """Call write(tmp) on a temporary file beside `target`, fsync it and rename it over `target`.

    The temporary is created with the usual permissions (0666 minus the umask) and removed on any
    failure, so the previous `target` stays intact and nothing half-written is left behind. An OSError
    that names no file (a write on a full disk) is given `target`'s name, so that the message says where.
    """
    target = Path(target)
    tmp = temp_name(target, suffix)
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = tmp.stat().st_mode & 0o777  # 0666 minus the umask
        write(tmp)
        if tmp.stat().st_mode & 0o777 != mode:  # a writer that re-created the file (safetensors: 0600)
            os.chmod(tmp, mode)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.strerror and exc.filename is None:  # a full disk names no file
            exc.filename = str(target)
        raise
    _fsync_dir(target.parent)
    return target


def atomic_write_text(target: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `target` atomically (see atomic_write)."""
    data = text.encode()
    return atomic_write(target, lambda tmp: tmp.write_bytes(data))


def staging_dir(folder: str | Path, name: str) -> Path:
    """A fresh, empty temporary folder inside `folder` for outputs that are swapped in only on success."""
    path = temp_name(Path(folder) / name)
    path.mkdir()
    return path


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def remove_stale_temp_files(folder: str | Path) -> list[Path]:
    """Remove temporaries of ours left in `folder` by a killed writer (its pid is gone); returns what was removed."""
    folder = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        match = _OURS.match(entry.name)
        if match is not None:
            pid = int(match["pid"])
            stale = pid != os.getpid() and not _pid_alive(pid)
        else:
            legacy = _LEGACY.match(entry.name) is not None or (_SAFETENSORS_OWN.match(entry.name) is not None
                                                              and _is_safetensors(entry))
            try:
                stale = legacy and entry.is_file() and now - entry.stat().st_mtime > LEGACY_AGE_S
            except OSError:
                stale = False
        if not stale:
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass  # not ours to fight over: a later start tries again
    return removed


def _is_safetensors(path: Path) -> bool:
    """Whether the file starts as a safetensors file does: an 8-byte header length, then the JSON header's '{'."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError:
        return False
    return len(head) == 9 and head[8:] == b"{"


def refuse_non_folder(path: str | Path, role: str) -> Path:
    """OutputError if `path` is a file or lies below one (no side effect: nothing is created)."""
    path = Path(path).expanduser()
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is a file, not a folder" if parent == path else f"lies below the file {parent}"
                raise OutputError(f"{role} {path} {where}; choose a folder")
            break
    return path


def check_output_dir(path: str | Path, role: str) -> Path:
    """Create `path` if needed and prove it writable (a probe file), before any work; OutputError says why not.

    `role` names the folder in the message (e.g. '--out folder'). A probe catches what permission
    bits do not: a read-only mount, a full disk's refusal to create files, root on a read-only mount.
    """
    path = refuse_non_folder(path, role)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create {role} {path}: {describe_os_error(exc)}") from None
    probe = temp_name(path / "write-probe")
    try:
        with open(probe, "xb") as handle:
            handle.write(b"deal_ros")
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as exc:
        raise OutputError(f"{role} {path} is not writable: {os_error_cause(exc)}") from None
    finally:
        with contextlib.suppress(OSError):
            probe.unlink()
    return path


def _mb(num_bytes: float) -> str:
    return f"{num_bytes / 1e6:.1f} MB"


def check_free_space(path: str | Path, needed_bytes: int, role: str, what: str) -> None:
    """Refuse to start work whose output (`what`, about `needed_bytes`) cannot fit: free space and ulimit -f."""
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:
        raise OutputError(f"cannot query free space of {role} {path}: {describe_os_error(exc)}") from None
    if free < needed_bytes:
        raise OutputError(f"{role} {path} has {_mb(free)} free but {what} needs about {_mb(needed_bytes)}: "
                          "free some space or choose another folder")
    try:
        import resource
    except ImportError:  # not POSIX
        return
    limit, _ = resource.getrlimit(resource.RLIMIT_FSIZE)
    if limit != resource.RLIM_INFINITY and limit < needed_bytes:
        raise OutputError(f"the file size limit (ulimit -f) is {_mb(limit)} but {what} needs about "
                          f"{_mb(needed_bytes)}: raise the limit")


def retry(action: Callable[[], T], attempts: int = 3, delay_s: float = 0.5) -> T:
    """action(), tried `attempts` times on OSError with doubling delays (a flaky or briefly full disk)."""
    for attempt in range(attempts):
        try:
            return action()
        except OSError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay_s * 2**attempt)
    raise AssertionError("unreachable")


def rescue_folders() -> Iterator[Path]:
    """Where outputs go when their folder cannot take them: the temp folder ($TMPDIR), then the home folder."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for base in (Path(tempfile.gettempdir()), Path.home()):
        yield base / f"{RESCUE_PREFIX}{stamp}-{os.getpid()}"


@dataclass
class Written:
    """Where write_or_rescue put the files, and why not where they were asked for (None = they are there)."""

    folder: Path
    failure: str | None = None
    """'PATH: cause' of the write that failed in the asked-for folder."""

    @property
    def rescued(self) -> bool:
        return self.failure is not None


def write_or_rescue(folder: str | Path, writers: Mapping[str, Callable[[Path], object]],
                    attempts: int = SAVE_ATTEMPTS, delay_s: float = 0.5) -> Written:
    """Run writer(folder / name) for every file, retrying; if one keeps failing, write them all to a rescue folder.

    Writers must write atomically (a failed attempt leaves the old file). Errors other than OSError
    (e.g. a refusal to save non-finite weights) pass through at once. Raises OutputError naming every
    place tried when no folder takes the files.
    """
    folder = Path(folder)
    try:
        for name, write in writers.items():
            retry(functools.partial(write, folder / name), attempts, delay_s)
        return Written(folder)
    except OSError as exc:
        failure = describe_os_error(exc)
    tried = [f"{folder}: {failure}"]
    for rescue in rescue_folders():
        try:
            rescue.mkdir(parents=True, exist_ok=True)
            for name, write in writers.items():
                write(rescue / name)
            return Written(rescue, failure)
        except OSError as exc:
            tried.append(f"{rescue}: {describe_os_error(exc)}")
    raise OutputError(f"could not write {', '.join(writers)} anywhere ({'; '.join(tried)})")
