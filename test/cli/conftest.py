"""Session fixtures of the command-line tests live in clitools.py (importable by name, unlike conftest)."""

from clitools import labelled, other_aspect_gt, realsense_bag, scene_bag, trained  # noqa: F401
