"""scripts/: a plain mistake (no data, a bad option) gets one line, and --help only prints help."""

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_render_onboard_yaml_help_does_not_rewrite_the_file():
    path = REPO / "config" / "onboard.yaml"
    before = path.stat().st_mtime_ns
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "render_onboard_yaml.py"), "--help"],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stdout + result.stderr
    assert path.stat().st_mtime_ns == before


def test_apc_overlays_without_frames_says_so_instead_of_waiting(tmp_path, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["apc_overlays.py", "--data", str(tmp_path), "--out", str(out)])
    with pytest.raises(SystemExit, match=r"no .*scene-0000/frame-\*\.color\.png"):
        load_script("apc_overlays").main()
    assert not out.exists()


def test_bench_live_sizes_are_h_x_w():
    size_hw = load_script("bench_live").size_hw
    assert size_hw("240x320") == (240, 320)
    for bad in ("240", "240x", "0x320", "ax320"):
        with pytest.raises(argparse.ArgumentTypeError):
            size_hw(bad)
