"""Session fixtures of the command-line tests live in clitools.py (importable by name, unlike conftest)."""

import os

from clitools import labelled, other_aspect_gt, realsense_bag, scene_bag, trained  # noqa: F401

# Tests read a command's progress from a pipe (not a terminal) to know that it has trained a step:
# a line for every update instead of one every 30 s (test_progress.py checks the default).
os.environ["DEAL_ROS_PROGRESS_INTERVAL_S"] = "0"
