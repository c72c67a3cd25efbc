"""scripts/gpu_check.sh, the one-call GPU check, in its reduced CPU form: every row is measured and printed."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_on_the_cpu_and_prints_one_table():
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--device", "cpu", "--quick"],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    table = result.stdout.splitlines()
    assert table[0].split() == ["check", "result", "note"]
    rows = {line.split("  ")[0] for line in table[1:]}
    for row in ("device", "CUDA tests (pytest -k cuda)", "training steps/s, AMP off, DEAL on",
                "training steps/s, AMP on, DEAL on", "DEAL overhead per step, AMP off",
                "segmenter (torch eager), 640x480 frame"):
        assert row in rows, result.stdout
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return
    assert "ONNX export + parity" in rows and "segmenter (onnxruntime, CPU), 640x480 frame" in rows, result.stdout
    assert "MISSED" not in result.stdout
