"""deal_ros.io.bag.frames: synchronised, tagged RGB-D frames from real bags (sqlite3, mcap) written in tmp_path."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from bagfactory import BASE_NS, K, write_rgbd_bag

from deal_ros.config import SyncConfig
from deal_ros.frames.tags import TagSchedule, UnknownTagError, parse_tags
from deal_ros.io.bag import BagError, ReadStats, inspect_bag, iter_rgbd_frames, scan_tag_names
from deal_ros.io.pairs import check_pair
from deal_ros.online.tags import TagState

CLASSES = ["mug", "box", "bottle"]


def test_frames_are_synced_with_tags_and_intrinsics(bag):
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, classes=CLASSES, stats=stats))
    assert len(frames) == 20 and stats.frames == 20
    assert not stats.skipped, stats.summary()
    for i, frame in enumerate(frames):
        assert frame.index == i
        assert frame.stamp_ns == bag.rgb_stamps_ns[i]
        assert frame.rgb.dtype == np.uint8 and frame.rgb.shape == (120, 160, 3)
        np.testing.assert_array_equal(frame.rgb, bag.rgb[i])
        assert frame.depth_m.dtype == np.float32 and frame.depth_m.shape == (120, 160)
        np.testing.assert_allclose(frame.depth_m, bag.depth_m[i], atol=1e-6)
        assert frame.tags == bag.tags[i]
        assert frame.frame_id == "camera_color_optical_frame"
        np.testing.assert_array_equal(frame.intrinsics, K)
    # the tag change at 1.05 s applies from frame 11 on
    assert frames[10].tags == ["mug", "box"] and frames[11].tags == ["box"]
    assert stats.messages["/camera/color/image_raw"] == 20


def test_fixed_tags_override_the_topic(bag):
    frames = list(iter_rgbd_frames(bag.path, tags="bottle, mug", classes=CLASSES))
    assert len(frames) == 20 and all(f.tags == ["bottle", "mug"] for f in frames)
    frames = list(iter_rgbd_frames(bag.path, tags=[], classes=CLASSES))
    assert len(frames) == 20 and all(f.tags == [] for f in frames)


def test_unknown_fixed_tag_is_refused_with_close_match(bag):
    with pytest.raises(UnknownTagError, match=r"'mugg'.*known classes.*did you mean 'mug'"):
        iter_rgbd_frames(bag.path, tags=["mugg"], classes=CLASSES)


def test_yaml_schedule(bag, tmp_path):
    schedule_path = tmp_path / "tags.yaml"
    schedule_path.write_text(
        "time: relative\n"
        "ranges:\n"
        "  - {start_s: 0.0, end_s: 0.55, tags: 'mug'}\n"
        "  - {start_s: 0.55, end_s: 1.2, tags: [box, bottle]}\n"
    )
    schedule = TagSchedule.from_yaml(schedule_path, CLASSES)
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, tags=schedule, classes=CLASSES, stats=stats))
    for frame in frames:
        i = bag.rgb_stamps_ns.index(frame.stamp_ns)
        t_s = (bag.rgb_log_ns[i] - bag.start_ns) / 1e9
        assert frame.tags == (["mug"] if t_s < 0.55 else ["box", "bottle"])
    assert len(frames) + stats.skipped["no_tags"] == 20 and stats.skipped["no_tags"] == 8


def test_schedule_absolute_and_errors(tmp_path):
    absolute = TagSchedule.from_dict(
        {
            "time": "absolute",
            "ranges": [{"start_s": BASE_NS / 1e9, "end_s": BASE_NS / 1e9 + 1, "tags": "mug"}],
        }
    )
    assert absolute.tags_at(BASE_NS + 10**8, 0) == ["mug"]
    assert absolute.tags_at(BASE_NS + 2 * 10**9, 0) is None
    with pytest.raises(ValueError, match="overlap"):
        TagSchedule.from_dict(
            [{"start_s": 0, "end_s": 2, "tags": "a"}, {"start_s": 1, "end_s": 3, "tags": "b"}]
        )
    with pytest.raises(UnknownTagError, match="'cup'"):
        TagSchedule.from_dict([{"start_s": 0, "end_s": 2, "tags": "cup"}], CLASSES)
    with pytest.raises(ValueError, match="start_s, end_s and tags"):
        TagSchedule.from_dict([{"start": 0, "end_s": 2, "tags": "mug"}])
    with pytest.raises(ValueError, match="not found"):
        TagSchedule.from_yaml(tmp_path / "missing.yaml")
    twice = tmp_path / "twice.yaml"
    twice.write_text("- {start_s: 0, end_s: 1, tags: mug, tags: box}\n")
    with pytest.raises(ValueError, match=r"'tags' is given twice \(line 1 and line 1\)"):
        TagSchedule.from_yaml(twice)


def test_parse_tags():
    assert parse_tags(" mug ,box,, mug", CLASSES) == ["mug", "box"]
    assert parse_tags("", CLASSES) == []
    with pytest.raises(UnknownTagError) as info:
        parse_tags("Mug, cup", CLASSES)
    assert info.value.unknown == ["Mug", "cup"] and "did you mean 'mug'" in str(info.value)


def test_unknown_tag_on_topic_is_counted(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=10, tags_sequence=[(0.0, "mug"), (0.45, "mug, cup")])
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, classes=CLASSES, stats=stats))
    assert [f.tags for f in frames] == [["mug"]] * 5
    assert stats.skipped["unknown_tag"] == 5
    assert "'cup'" in stats.examples["unknown_tag"] and "unknown_tag" in stats.summary()


def test_frames_before_the_first_tags_are_skipped(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=10, tags_sequence=[(0.55, "box")])
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, stats=stats))
    assert len(frames) == 4 and stats.skipped["no_tags"] == 6


def test_bag_without_tags_topic(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=5, tags_topic=None)
    with pytest.raises(BagError, match="no tags topic"):
        list(iter_rgbd_frames(bag.path))
    frames = list(iter_rgbd_frames(bag.path, require_tags=False))
    assert len(frames) == 5 and all(f.tags == [] for f in frames)


def _image(encoding, width, height):
    header = SimpleNamespace(frame_id="camera_color_optical_frame", stamp=None)
    return SimpleNamespace(encoding=encoding, width=width, height=height, header=header)


def test_unaligned_depth_is_refused_as_the_node_refuses_it(tmp_path):
    bag = write_rgbd_bag(
        tmp_path / "b", num_frames=4, depth_topic="/camera/depth/image_rect_raw", depth_size=(60, 80)
    )
    node = check_pair(_image("rgb8", 160, 120), _image("16UC1", 80, 60))  # what the nodes say of such a pair
    assert not node.ok
    info = inspect_bag(bag.path)
    assert info.choice.depth_aligned is False and any("unaligned" in w for w in info.warnings)
    assert not info.usable and any(node.errors[0] in p for p in info.problems)
    stats = ReadStats()
    assert list(iter_rgbd_frames(bag.path, stats=stats)) == []
    assert stats.skipped["size_mismatch"] == 4 and stats.examples["size_mismatch"] == node.errors[0]
    assert not any("resiz" in w for w in stats.warnings)


def test_tags_topic_in_the_parameter_syntax_is_read_as_the_node_reads_it(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=4, tags_sequence=[(0.0, "[mug, 'box']")])
    state = TagState(CLASSES)
    assert not state.set("[mug, 'box']").error  # the node's tags topic
    stats = ReadStats()
    frames = list(iter_rgbd_frames(bag.path, classes=CLASSES, stats=stats))
    assert len(frames) == 4 and all(f.tags == list(state.tags) == ["mug", "box"] for f in frames)
    assert not stats.skipped, stats.summary()


def test_pairs_as_the_node_with_the_config_sync_section(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=6, jitter_ms=20.0)
    assert len(list(iter_rgbd_frames(bag.path, sync=SyncConfig(slop=0.05)))) == 6
    stats = ReadStats()
    assert list(iter_rgbd_frames(bag.path, sync=SyncConfig(slop=0.001), stats=stats)) == []
    assert stats.skipped["unmatched_rgb"] == 6


def test_compressed_topics(tmp_path):
    bag = write_rgbd_bag(
        tmp_path / "b",
        num_frames=4,
        rgb_topic="/camera/color/image_raw/compressed",
        depth_topic="/camera/aligned_depth_to_color/image_raw/compressedDepth",
        rgb_encoding="png",
        depth_encoding="compressedDepth",
    )
    frames = list(iter_rgbd_frames(bag.path))
    assert len(frames) == 4
    for i, frame in enumerate(frames):
        np.testing.assert_array_equal(frame.rgb, bag.rgb[i])
        np.testing.assert_allclose(frame.depth_m, bag.depth_m[i], atol=1e-6)
    info = inspect_bag(bag.path)
    assert info.usable and info.topic(info.choice.depth_topic).encoding == "16UC1; compressedDepth png"


def test_32fc1_and_bgr8_bag(tmp_path):
    bag = write_rgbd_bag(tmp_path / "b", num_frames=3, rgb_encoding="bgr8", depth_encoding="32FC1")
    frames = list(iter_rgbd_frames(bag.path))
    np.testing.assert_array_equal(frames[2].rgb, bag.rgb[2])
    np.testing.assert_array_equal(frames[2].depth_m, bag.depth_m[2])


def test_multiple_bags_continue_the_index(bag):
    frames = list(iter_rgbd_frames([bag.path, bag.path]))
    assert [f.index for f in frames] == list(range(len(frames))) and len(frames) == 40


def test_bagfactory_accepts_given_frames(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    depth = np.full((32, 48), 2.0, np.float32)
    depth[:, :8] = 1.0  # one value everywhere would be refused as degenerate (test_degenerate_depth_is_skipped)
    bag = write_rgbd_bag(Path(tmp_path) / "b", frames=[(rgb, depth)] * 3, storage="mcap")
    frames = list(iter_rgbd_frames(bag.path))
    assert len(frames) == 3 and frames[0].rgb.shape == (32, 48, 3)
    np.testing.assert_allclose(frames[0].depth_m, depth)


def test_degenerate_depth_is_skipped_with_the_reason(tmp_path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    holes, flat = np.zeros((32, 48), np.float32), np.full((32, 48), 2.0, np.float32)
    bag = write_rgbd_bag(Path(tmp_path) / "b", frames=[(rgb, holes), (rgb, flat), (rgb, flat)], storage="mcap")
    stats = ReadStats()
    assert list(iter_rgbd_frames(bag.path, stats=stats)) == []
    assert dict(stats.skipped) == {"depth_no_valid": 1, "depth_constant": 2}
    assert "no valid depth pixel (all 0" in stats.examples["depth_no_valid"]
    assert "depth is 2 m at every valid pixel" in stats.examples["depth_constant"]
    kept = list(iter_rgbd_frames(bag.path, skip_degenerate_depth=False, stats=(stats := ReadStats())))
    assert len(kept) == 3 and any("degenerate depth" in w for w in stats.warnings)
    info = inspect_bag(bag.path)
    assert not info.usable and info.frames_usable == 0
    assert info.problems[0].startswith("no usable RGB-D frame: depth_constant 2 (e.g. ")


def test_tags_topic_in_parameter_syntax_reads_as_the_node_reads_it(tmp_path):
    written = write_rgbd_bag(tmp_path / "bag", num_frames=3, size=(48, 64), tags_sequence=((0.0, "[mug, 'box']"),))
    assert scan_tag_names(str(written.path), None) == ("/tags", ["mug", "box"])
    frames = list(iter_rgbd_frames(written.path, classes=CLASSES))
    assert len(frames) == 3 and all(frame.tags == ["mug", "box"] for frame in frames)


def _millimetre_float_bag(path: Path) -> tuple[Path, list[np.ndarray]]:
    """A bag whose 32FC1 depth holds millimetres (some drivers publish mm as float), and the depth in metres."""
    rng = np.random.default_rng(5)
    metres = [np.where(rng.random((24, 32)) < 0.02, 0.0, np.full((24, 32), 1.5, np.float32)) for _ in range(3)]
    for depth in metres:
        depth[4:12, 6:18] = 0.8
    frames = [(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (d * 1000).astype(np.float32)) for d in metres]
    return write_rgbd_bag(path, num_frames=3, frames=frames, depth_encoding="32FC1").path, metres


@pytest.mark.parametrize("skip_degenerate_depth", [True, False])
def test_float_depth_in_millimetres_is_refused_naming_the_unit(tmp_path, skip_degenerate_depth):
    """Train (skips degenerate depth) and label (keeps it) refuse the same bag with the same line."""
    path, _ = _millimetre_float_bag(tmp_path / "mm")
    with pytest.raises(BagError, match=r"median depth 1500 cannot be metres \(likely millimetres, 1\.5 m\).*"
                                       r"depth\.float_unit=mm"):
        list(iter_rgbd_frames(path, tags="mug", skip_degenerate_depth=skip_degenerate_depth))


def test_float_depth_unit_setting_converts_millimetres(tmp_path):
    path, metres = _millimetre_float_bag(tmp_path / "mm")
    frames = list(iter_rgbd_frames(path, tags="mug", depth_float_unit="mm"))
    assert len(frames) == 3
    for frame, expected in zip(frames, metres, strict=True):
        np.testing.assert_allclose(frame.depth_m, expected, rtol=1e-6)
    with pytest.raises(BagError, match="depth_float_unit"):
        iter_rgbd_frames(path, tags="mug", depth_float_unit="cm")
