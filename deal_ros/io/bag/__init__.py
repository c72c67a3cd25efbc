"""Reading RGB-D frames and tags from rosbags (rosbag2 sqlite3 / mcap, ROS 1 .bag) without ROS, and writing bags.

Uses the pure-Python ``rosbags`` library, imported when a bag is opened or written. User errors
(missing file, empty or corrupt bag, missing topic) raise :class:`BagError` with a message meant
for a person, never a traceback.

- :mod:`~deal_ros.io.bag.errors`: BagError and the reader errors translated into it
- :mod:`~deal_ros.io.bag.topics`: camera driver profiles and topic heuristics (select_topics)
- :mod:`~deal_ros.io.bag.reader`: opening a bag, its messages, the tag names on its tags topic
- :mod:`~deal_ros.io.bag.frames`: synchronised, tagged RGB-D frames (iter_rgbd_frames, FrameQuery)
- :mod:`~deal_ros.io.bag.inspection`: what a bag holds and whether `train` can use it (inspect_bag)
- :mod:`~deal_ros.io.bag.background`: reading in a background thread (prefetch)
- :mod:`~deal_ros.io.bag.writer`: the one bag writer (BagWriter)
"""

from deal_ros.io.bag.background import prefetch
from deal_ros.io.bag.errors import BagError
from deal_ros.io.bag.frames import FrameQuery, ReadStats, RGBDFrame, iter_rgbd_frames
from deal_ros.io.bag.inspection import CHECK_FRAMES, BagInfo, TopicStats, inspect_bag
from deal_ros.io.bag.reader import open_bag, read_messages, scan_tag_names
from deal_ros.io.bag.topics import TopicChoice, find_tags_topic, select_topics
from deal_ros.io.bag.writer import BagWriter

__all__ = [
    "CHECK_FRAMES",
    "BagError",
    "BagInfo",
    "BagWriter",
    "FrameQuery",
    "RGBDFrame",
    "ReadStats",
    "TopicChoice",
    "TopicStats",
    "find_tags_topic",
    "inspect_bag",
    "iter_rgbd_frames",
    "open_bag",
    "prefetch",
    "read_messages",
    "scan_tag_names",
    "select_topics",
]
