"""`bench quality` and `ablate`: --out is checked before anything trains, and each recipe's results are written as
soon as it finishes (a stopped or failed run keeps them). Training itself is replaced by a stand-in here."""

from __future__ import annotations

import json
import shutil
from collections import namedtuple

import pytest

from deal_ros.cli import main
from deal_ros.cli.quality import QUALITY_KEYS
from deal_ros.lab.experiment import ArmResult

QUALITY = ["bench", "quality", "--recipes", "cls-only", "plane", "--steps", "2", "--train-frames", "2",
           "--val-frames", "2", "--scene-size", "48", "64", "--size", "32", "48", "--weights", "none",
           "--set", "train.device=cpu"]
ABLATE = ["ablate", "--sets", "cls", "cls+deal", "--steps", "2", "--train-frames", "2", "--eval-frames", "2",
          "--size", "32", "48", "--weights", "none", "--set", "train.device=cpu"]


class StandIn:
    """run_arm that returns a result at once for the first recipe and stops the run (a crash) on the second."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, name, cfg, train_frames, eval_frames, steps, *args, **kwargs):
        self.calls.append(name)
        if len(self.calls) > 1:
            raise RuntimeError("the second recipe crashed")
        names = ["background", *cfg.classes]
        result = ArmResult(name=name, pseudo_miou=0.25, mask_miou=0.5, pseudo_iou=dict.fromkeys(names, 0.25),
                           mask_iou=dict.fromkeys(names, 0.5), mean_step_time_s=0.1, wall_time_s=1.0,
                           history=[{"step": 1, "loss": 1.0}], curve=[{"step": 2, "pseudo_miou": 0.25,
                                                                       "mask_miou": 0.5}],
                           pseudo_cover=dict.fromkeys(cfg.classes, 0.1),
                           pseudo_quality=dict.fromkeys(QUALITY_KEYS, 0.5),
                           mask_quality=dict.fromkeys(QUALITY_KEYS, 0.5))
        return result, None


@pytest.mark.parametrize("command", [QUALITY, ABLATE], ids=["quality", "ablate"])
def test_a_full_out_folder_is_refused_before_any_training(command, tmp_path, monkeypatch, capsys):
    """It was found only at the end, after every recipe had trained (34 min each)."""
    stand_in = StandIn()
    monkeypatch.setattr("deal_ros.lab.experiment.run_arm", stand_in)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 1000, 1000))
    assert main([*command, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert f"--out folder {tmp_path / 'out'} has 0.0 MB free but the report needs about" in err
    assert stand_in.calls == []


@pytest.mark.parametrize(("command", "report", "key", "first"),
                         [(QUALITY, "quality.json", "recipes", "cls-only"), (ABLATE, "ablation.json", "sets", "cls")],
                         ids=["quality", "ablate"])
def test_each_recipe_is_written_as_it_finishes(command, report, key, first, tmp_path, monkeypatch):
    """All results were lost when anything failed before the end."""
    monkeypatch.setattr("deal_ros.lab.experiment.run_arm", StandIn())
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="the second recipe crashed"):
        _run_raising([*command, "--out", str(out)])
    written = json.loads((out / report).read_text())
    assert [row["name"] for row in written[key]] == [first]
    assert "1 of 2" in (out / report.replace(".json", ".md")).read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted([report, report.replace(".json", ".md"),
                                                            "quality.png" if key == "recipes" else "ablation_miou.png"])


def _run_raising(argv: list[str]) -> None:
    """The subcommand itself (main would turn the crash into exit code 1)."""
    from deal_ros.cli import build_parser

    args = build_parser(argv[0]).parse_args(argv)
    args.func(args)
