"""deal_ros.io.bag.writer: what BagWriter writes reads back through the package's own reader, in every storage."""

from __future__ import annotations

import numpy as np
import pytest

from deal_ros.io.bag import BagWriter, iter_rgbd_frames, open_bag, read_messages
from deal_ros.io.image_codec import ImageDecodeError, decode_depth_m, decode_image, encode_depth

K = np.array([[300.0, 0.0, 16.0], [0.0, 300.0, 12.0], [0.0, 0.0, 1.0]])


@pytest.mark.parametrize("storage", ["sqlite3", "mcap", "rosbag1"])
def test_round_trip_of_every_message_kind(tmp_path, storage):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    depth_m = rng.uniform(0.3, 4.0, (24, 32)).astype(np.float32)
    depth_m[0, :5] = 0.0
    path = tmp_path / ("b.bag" if storage == "rosbag1" else "b")
    with BagWriter(path, storage) as bag:
        bag.add_topic("/empty", "std_msgs/msg/String")
        bag.write_string("/tags", 1_000, "mug, box")
        bag.write_image("/rgb", 2_000, rgb, "rgb8", stamp_ns=1_500, frame_id="cam")
        bag.write_depth("/depth", 3_000, depth_m, frame_id="cam")
        bag.write_compressed_image("/rgb/compressed", 4_000, b"\x89PNG", "png", frame_id="cam")
        bag.write_camera_info("/info", 5_000, K, 32, 24, frame_id="cam")
    with open_bag(path) as reader:
        assert {name: info.msgtype for name, info in reader.topics.items()} == {
            "/empty": "std_msgs/msg/String", "/tags": "std_msgs/msg/String", "/rgb": "sensor_msgs/msg/Image",
            "/depth": "sensor_msgs/msg/Image", "/rgb/compressed": "sensor_msgs/msg/CompressedImage",
            "/info": "sensor_msgs/msg/CameraInfo"}
        read = {conn.topic: (log_ns, reader.deserialize(raw, conn.msgtype))
                for conn, log_ns, raw in read_messages(reader, reader.connections, path)}
    assert [log_ns for log_ns, _ in read.values()] == [1_000, 2_000, 3_000, 4_000, 5_000]
    assert read["/tags"][1].data == "mug, box"
    image = read["/rgb"][1]
    assert (image.header.stamp.sec, image.header.stamp.nanosec, image.header.frame_id) == (0, 1_500, "cam")
    np.testing.assert_array_equal(decode_image(image), rgb)
    depth = read["/depth"][1]
    assert depth.encoding == "16UC1" and depth.header.stamp.nanosec == 3_000  # stamp = record time by default
    np.testing.assert_allclose(decode_depth_m(depth), depth_m, atol=0.5e-3)
    assert bytes(read["/rgb/compressed"][1].data) == b"\x89PNG"
    info = read["/info"][1]
    k = info.K if storage == "rosbag1" else info.k
    np.testing.assert_array_equal(np.asarray(k).reshape(3, 3), K)
    assert (info.width, info.height) == (32, 24)


def test_written_frames_read_back(tmp_path):
    rgb = np.zeros((8, 12, 3), np.uint8)
    depth_m = np.full((8, 12), 1.25, np.float32)
    depth_m[:, :4] = 0.5
    with BagWriter(tmp_path / "b") as bag:
        bag.write_string("/tags", 0, "mug")
        for i in range(3):
            stamp_ns = (i + 1) * 10**8
            bag.write_image("/camera/color/image_raw", stamp_ns, rgb, "rgb8", frame_id="cam")
            bag.write_depth("/camera/aligned_depth_to_color/image_raw", stamp_ns + 10**6, depth_m, "32FC1",
                            stamp_ns=stamp_ns, frame_id="cam")
    frames = list(iter_rgbd_frames(tmp_path / "b"))
    assert [f.stamp_ns for f in frames] == [10**8, 2 * 10**8, 3 * 10**8]
    assert all(f.tags == ["mug"] and f.intrinsics is None for f in frames)
    np.testing.assert_array_equal(frames[0].depth_m, depth_m)


def test_refuses_a_topic_with_another_type_and_an_unknown_storage(tmp_path):
    with pytest.raises(ValueError, match="storage must be"):
        BagWriter(tmp_path / "b", "db3")  # type: ignore[arg-type]
    with BagWriter(tmp_path / "b") as bag:
        bag.write_string("/x", 0, "a")
        with pytest.raises(ValueError, match="was added as std_msgs/msg/String"):
            bag.write_image("/x", 1, np.zeros((2, 2), np.uint8), "mono8")


def test_an_error_inside_the_block_aborts_the_bag(tmp_path):
    with pytest.raises(RuntimeError, match="stop"), BagWriter(tmp_path / "b") as bag:
        bag.write_string("/x", 0, "a")
        raise RuntimeError("stop")
    assert not (tmp_path / "b" / "metadata.yaml").exists()


def test_encode_depth_is_the_inverse_of_decode_depth_m():
    depth_m = np.array([[0.0, 0.8, 1.2345, np.nan], [np.inf, -1.0, 70.0, 2.0]], np.float32)
    np.testing.assert_array_equal(encode_depth(depth_m, "16UC1"), [[0, 800, 1234, 0], [0, 0, 65535, 2000]])
    expected_m = np.array([[0, 0.8, 1.2345, 0], [0, 0, 70.0, 2.0]], np.float32)
    np.testing.assert_array_equal(encode_depth(depth_m, "32FC1"), expected_m)
    with pytest.raises(ImageDecodeError, match="not a depth encoding"):
        encode_depth(depth_m, "rgb8")
