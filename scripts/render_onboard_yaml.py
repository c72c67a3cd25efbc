#!/usr/bin/env python3
"""Regenerate config/onboard.yaml after config keys change (`python scripts/render_onboard_yaml.py`).

Keeps the file's header comment and every value that differs from the schema's default; every key
gets its description from deal_ros/config.py (test/ros/test_logic_params.py checks the file is complete).
"""

from __future__ import annotations

from pathlib import Path

import yaml

from deal_ros.ros.params import flatten_parameters, render_parameter_file

PATH = Path(__file__).resolve().parents[1] / "config" / "onboard.yaml"


def main() -> None:
    current = PATH.read_text()
    header = current[: current.index("/**:")]
    chosen = flatten_parameters(yaml.safe_load(current)["/**"]["ros__parameters"])
    defaults = flatten_parameters(yaml.safe_load(render_parameter_file())["/**"]["ros__parameters"])
    overrides = {k: v for k, v in chosen.items() if k in defaults and v != defaults[k]}
    PATH.write_text(header + render_parameter_file(overrides))
    print(f"wrote {PATH} ({len(overrides)} non-default values: {sorted(overrides)})")


if __name__ == "__main__":
    main()
