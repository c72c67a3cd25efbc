"""deal_ros.frames.tags.parse_tags: the one reader of tags text (--tags, a bag's tags topic, the nodes)."""

from __future__ import annotations

import pytest

from deal_ros.frames.tags import TagError, UnknownTagError, parse_tags

CLASSES = ["mug", "box", "ball"]


@pytest.mark.parametrize("value, expected", [
    ("mug, box", ["mug", "box"]),
    ("[mug, box]", ["mug", "box"]),
    ("[mug, 'box']", ["mug", "box"]),
    (' [ "mug" ,box ] ', ["mug", "box"]),
    (["mug", "box"], ["mug", "box"]),
    (["mug, box"], ["mug", "box"]),
    (["[mug, box]"], ["mug", "box"]),
    ("", []),
    ("[]", []),
    (b"", []),
    (None, []),
    ([], []),
    ("box,box, mug", ["box", "mug"]),
])
def test_tags_as_people_and_tools_write_them(value, expected):
    assert parse_tags(value, CLASSES) == expected


def test_unknown_or_untyped_tags_are_refused():
    with pytest.raises(UnknownTagError, match="did you mean 'mug'"):
        parse_tags("[mugg, box]", CLASSES)
    with pytest.raises(TagError, match="got 3"):
        parse_tags(3, CLASSES)
