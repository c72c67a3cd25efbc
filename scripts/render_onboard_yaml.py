#!/usr/bin/env python3
"""Regenerate config/onboard.yaml after config keys or defaults change (`python scripts/render_onboard_yaml.py`).

The file is the declared defaults, every key with its description, choices and range from its declaration
(the `setting(...)` of the config fields in deal_ros/config/schema.py and loss_sections.py, and of NodeParameters in
deal_ros/online/parameters.py), under the file's header comment: one source of defaults, checked by
test/online/test_parameters.py. Change a default in the declaration, not here.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from deal_ros.online.parameters import render_parameter_file

PATH = Path(__file__).resolve().parents[1] / "config" / "onboard.yaml"


def main() -> None:
    # No options, but `--help` must print this and not rewrite the file.
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    current = PATH.read_text()
    header = current[: current.index("/**:")]
    PATH.write_text(header + render_parameter_file())
    print(f"wrote {PATH} (the declared defaults)")


if __name__ == "__main__":
    main()
