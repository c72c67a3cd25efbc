"""deal_ros.labels.colors: label pictures are written atomically as RGB PNGs."""

from __future__ import annotations

import numpy as np

from deal_ros.labels.colors import save_png


def test_save_png_writes_rgb(tmp_path) -> None:
    import cv2

    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    save_png(tmp_path / "o.png", rgb)
    assert cv2.imread(str(tmp_path / "o.png"))[0, 0].tolist() == [0, 0, 200]
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]
