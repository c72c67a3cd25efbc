"""Progress output off a terminal is whole lines, not megabytes of carriage-return redraws."""

from __future__ import annotations

import io

import pytest

from deal_ros.cli import UserError
from deal_ros.cli.progress import INTERVAL_VARIABLE, progress_bar


def _run(updates: int) -> str:
    log = io.StringIO()  # not a terminal, like CI, `ros2 launch` or `> file`
    with progress_bar(total=updates, desc="train", unit="step", stream=log) as bar:
        for step in range(updates):
            bar.set_postfix(loss=f"{1 / (step + 1):.3f}", refresh=False)
            bar.update(1)
    return log.getvalue()


def test_a_log_gets_a_few_whole_lines_by_default(monkeypatch) -> None:
    monkeypatch.delenv(INTERVAL_VARIABLE, raising=False)
    text = _run(5000)
    lines = text.splitlines()
    assert "\r" not in text and "\x1b" not in text
    assert 2 <= len(lines) <= 4, lines  # the start, the end, and a line per 30 s at most
    assert "5000/5000" in lines[-1] and "loss=0.000" in lines[-1]


def test_the_interval_can_be_set_to_every_update(monkeypatch) -> None:
    monkeypatch.setenv(INTERVAL_VARIABLE, "0")
    lines = _run(20).splitlines()
    assert all(f"{n}/20" in lines[n] for n in range(21)) and len(lines) <= 22  # close may repeat the end


@pytest.mark.parametrize("value", ["soon", "-1", "inf", "nan"])
def test_a_bad_interval_is_one_clear_error(monkeypatch, value) -> None:
    monkeypatch.setenv(INTERVAL_VARIABLE, value)
    with pytest.raises(UserError, match=f"{INTERVAL_VARIABLE} must be a number of seconds"):
        progress_bar(total=1, stream=io.StringIO())
