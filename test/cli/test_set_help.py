"""`--set help`: the config keys listed from the schema's declaration, by every command that takes --set."""

from __future__ import annotations

import pytest

from deal_ros.cli import build_parser, config_keys_text, main
from deal_ros.config import config_keys


def test_set_help_lists_every_declared_key_with_default_choices_and_bounds(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--set", "help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out == config_keys_text()
    listed = [line.split("=", 1)[0] for line in out.splitlines() if line and not line.startswith((" ", "config"))]
    assert listed == [key.key for key in config_keys()]
    assert "loss.deal.edge_norm=fixed  (max | percentile | fixed)" in out
    assert "model.input_height=0  (integer a multiple of 16 in [0, 4096])" in out
    assert "train.lr=0.002  (number in (0, 10])" in out


@pytest.mark.parametrize("argv", [["train", "bag"], ["ablate"], ["bench", "quality"], ["bench", "train-io"]])
def test_set_collects_overrides(argv: list[str]) -> None:
    args = build_parser(argv[0]).parse_args([*argv, "--set", "train.lr=0.1", "--set", "train.seed=2"])
    assert args.overrides == ["train.lr=0.1", "train.seed=2"]
