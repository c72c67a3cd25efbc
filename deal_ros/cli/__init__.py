"""The `deal-ros` command: one entry point, one module per subcommand.

Each subcommand module has `register(subparsers)`, which adds its parser and sets
`func(args) -> int` as the default. User errors raise :class:`UserError` (or a ValueError
subclass from the core) and become a one-line message and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence
from typing import Any

SUBCOMMANDS = ("demo", "info", "train", "label", "eval", "bench", "ablate")


class UserError(Exception):
    """An error caused by the user's input (a path, a topic, an option); printed without traceback."""


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """['loss.deal.weight=0.5', ...] -> {'loss.deal.weight': 0.5}; values are YAML scalars."""
    import yaml

    overrides: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item!r}: expected key=value, e.g. train.batch_size=4")
        try:
            overrides[key.strip()] = yaml.safe_load(text) if text.strip() else text
        except yaml.YAMLError:
            overrides[key.strip()] = text
    return overrides


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="deal-ros",
        description="Train, label and evaluate DEAL-supervised CAM segmentation, without ROS.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        try:
            module = importlib.import_module(f"deal_ros.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"deal_ros.cli.{name}":
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from deal_ros.config import ConfigError

    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args) or 0)
    except (UserError, ConfigError, FileNotFoundError) as exc:
        print(f"deal-ros {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"deal-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
