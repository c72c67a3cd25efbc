"""Shared scenes of the synthetic tests: 12 full-size tabletop frames and 60 small ones, rendered once
per session (the scene and sensor tests share them)."""

from __future__ import annotations

import pytest

from deal_ros.lab.synthetic import SyntheticFrame, make_tabletop_scenes


@pytest.fixture(scope="session")
def frames() -> list[SyntheticFrame]:
    return make_tabletop_scenes(12, seed=3)


@pytest.fixture(scope="session")
def many_small() -> list[SyntheticFrame]:
    return make_tabletop_scenes(60, height=96, width=128, seed=11)
