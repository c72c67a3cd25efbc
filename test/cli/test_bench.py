"""`deal-ros bench`: both measurements run and report their ratios (timings themselves are not checked)."""

from __future__ import annotations

import json

from deal_ros.cli import main


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
