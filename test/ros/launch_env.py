"""Run `ros2 launch deal_ros ...` from a test: the installed package if sourced, else this checkout.

Without a colcon build, `ament_prefix` lays out in a temporary folder what `colcon build` installs for
this ament_python package (the package marker, package.xml, launch/, config/, and lib/deal_ros/ entry
points that run this interpreter), so the launch files run unchanged against the working tree.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ENTRY_POINTS = {"onboard": "onboard_main", "trainer_node": "trainer_main", "segmenter_node": "segmenter_main"}
"""Executable -> its function in deal_ros.ros.runner (setup.py's console_scripts)."""


def launch_unavailable() -> str:
    """Why `ros2 launch` cannot run here ('' when it can)."""
    if shutil.which("ros2") is None:
        return "the ros2 command is not on PATH (source a ROS 2 setup.bash)"
    try:
        import launch_ros  # noqa: F401

        import launch  # noqa: F401
    except ImportError as exc:
        return f"ROS 2 launch is not installed ({exc})"
    return ""


def installed_share() -> Path | None:
    """share/deal_ros of a sourced colcon install, if any."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        return Path(get_package_share_directory("deal_ros"))
    except PackageNotFoundError:
        return None


def ament_prefix(root: Path) -> Path:
    """An install prefix for deal_ros from this checkout, under root (symlinks; entry points use sys.executable)."""
    prefix = root / "deal_ros_prefix"
    (prefix / "share" / "ament_index" / "resource_index" / "packages").mkdir(parents=True)
    (prefix / "share" / "ament_index" / "resource_index" / "packages" / "deal_ros").write_text("")
    share = prefix / "share" / "deal_ros"
    share.mkdir(parents=True)
    (share / "package.xml").symlink_to(REPO / "package.xml")
    for folder in ("launch", "config"):  # files, not folders: ros2 launch's file search does not follow links
        (share / folder).mkdir()
        for path in (REPO / folder).iterdir():
            (share / folder / path.name).symlink_to(path)
    lib = prefix / "lib" / "deal_ros"
    lib.mkdir(parents=True)
    for name, function in ENTRY_POINTS.items():
        script = lib / name
        script.write_text(f"#!{sys.executable}\nfrom deal_ros.ros.runner import {function}\n{function}()\n")
        script.chmod(0o755)
    return prefix


def launch_env(root: Path) -> dict[str, str]:
    """Environment for a `ros2 launch deal_ros` subprocess: this checkout first on the Python path, and the
    package found through AMENT_PREFIX_PATH (a sourced install, else `ament_prefix`)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"
    if installed_share() is None:
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(ament_prefix(root)), env.get("AMENT_PREFIX_PATH", "")])
    return env
