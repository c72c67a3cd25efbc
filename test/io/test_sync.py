"""deal_ros.io.sync: message_filters ApproximateTimeSynchronizer (Python) semantics, offline."""

from __future__ import annotations

import numpy as np
import pytest

from deal_ros.io.sync import ApproximateTimeSync

MS = 1_000_000


def stamps_of(match):
    return tuple(s // MS for s, _ in match)


def feed(sync, events):
    """events: (stream, stamp_ms) in arrival order -> list of matched stamp tuples (ms)."""
    out = []
    for stream, stamp_ms in events:
        match = sync.add(stream, stamp_ms * MS, f"{stream}@{stamp_ms}")
        if match is not None:
            assert all(item == f"{i}@{s // MS}" for i, (s, item) in enumerate(match))
            out.append(stamps_of(match))
    return out


def merged(sync, *streams):
    """Feed streams of (stamp_ns, item), each sorted by stamp, in stamp order (a live system without latency);
    returns the matches and the final SyncStats."""
    events = sorted((s, index, item) for index, stream in enumerate(streams) for s, item in stream)
    matches = [m for s, index, item in events if (m := sync.add(index, s, item)) is not None]
    return matches, sync.finish()


def test_jittered_rgbd_pairs_up_one_to_one():
    rng = np.random.default_rng(1)
    rgb = [i * 100 * MS + int(rng.integers(-MS, MS)) for i in range(200)]
    depth = [s + int(rng.uniform(2, 8) * MS) * int(rng.choice([-1, 1])) for s in rgb]
    matches, stats = merged(ApproximateTimeSync(2, queue_size=10, slop_s=0.05),
                            [(s, ("rgb", i)) for i, s in enumerate(rgb)],
                            [(s, ("depth", i)) for i, s in enumerate(depth)])
    assert len(matches) == 200
    for (s_rgb, (_, i)), (s_depth, (_, j)) in matches:
        assert i == j and abs(s_rgb - s_depth) <= 8 * MS
    assert stats.dropped == [0, 0] and stats.matched == 200


def test_arrival_order_with_latency_gives_the_same_pairs():
    """A bag replays in receive order: depth arrives ~9 ms after its stamp, RGB ~3 ms."""
    rng = np.random.default_rng(2)
    rgb = [i * 100 * MS for i in range(50)]
    depth = [s + int(rng.uniform(-8, 8) * MS) for s in rgb]
    events = sorted([(s + 3 * MS, 0, s) for s in rgb] + [(s + 9 * MS, 1, s) for s in depth])
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    pairs = [m for _, stream, s in events if (m := sync.add(stream, s, s)) is not None]
    assert [(a[0], b[0]) for a, b in pairs] == list(zip(rgb, depth, strict=True))


def test_slop_is_respected():
    matches, stats = merged(ApproximateTimeSync(2, queue_size=5, slop_s=0.05),
                            [(0, "a0"), (1000 * MS, "a1")], [(60 * MS, "b0"), (1040 * MS, "b1")])
    assert [stamps_of(m) for m in matches] == [(1000, 1040)]
    assert stats.unmatched_at_end == [1, 1]


def test_first_acceptable_match_on_arrival_not_the_best():
    """message_filters matches as soon as a set within slop exists; a closer later message loses."""
    sync = ApproximateTimeSync(2, queue_size=10, slop_s=0.05)
    assert feed(sync, [(0, 0), (1, 40), (0, 45)]) == [(0, 40)]
    assert sync.finish().unmatched_at_end == [1, 0]


def test_spread_must_be_strictly_below_slop():
    sync = ApproximateTimeSync(2, queue_size=10, slop_s=0.05)
    # |dt| == slop passes the candidate filter (<=) but not the spread test (<)
    assert feed(sync, [(0, 0), (1, 50)]) == []
    assert feed(sync, [(0, 99)]) == [(99, 50)]


def test_candidates_are_tried_nearest_first():
    sync = ApproximateTimeSync(2, queue_size=10, slop_s=0.05)
    assert feed(sync, [(1, 10), (1, 30), (0, 25)]) == [(25, 30)]
    # B@10 stays queued and is used by the next A within slop
    assert feed(sync, [(0, 12)]) == [(12, 10)]


def test_three_streams():
    sync = ApproximateTimeSync(3, queue_size=10, slop_s=0.05)
    assert feed(sync, [(0, 0), (1, 10), (2, 45)]) == [(0, 10, 45)]
    # C@155 is 55 ms from A@100: A is not a candidate, nothing matches
    assert feed(sync, [(0, 100), (1, 110), (2, 155)]) == []
    assert feed(sync, [(2, 120)]) == [(100, 110, 120)]
    stats = sync.finish()
    assert stats.unmatched_at_end == [0, 0, 1] and stats.matched == 2


def test_queue_overflow_drops_the_oldest_and_counts_it():
    sync = ApproximateTimeSync(2, queue_size=2, slop_s=0.05)
    assert feed(sync, [(0, 0), (0, 1000), (0, 2000), (1, 2010)]) == [(2000, 2010)]
    stats = sync.finish()
    assert stats.dropped_overflow == [1, 0]
    assert stats.unmatched_at_end == [1, 0]
    assert stats.dropped == [2, 0] and stats.received == [3, 1]


def test_late_message_into_a_full_queue_is_dropped():
    sync = ApproximateTimeSync(2, queue_size=1, slop_s=0.05)
    assert feed(sync, [(0, 100), (0, 50)]) == []  # A@50 is older than A@100: trimmed at once
    assert feed(sync, [(1, 52)]) == [(100, 52)]  # 48 ms apart, within slop
    assert sync.finish().dropped_overflow == [1, 0]


def test_duplicate_stamp_replaces_and_is_counted():
    sync = ApproximateTimeSync(2, queue_size=5, slop_s=0.05)
    sync.add(0, 0, "x")
    sync.add(0, 0, "y")
    match = sync.add(1, 5 * MS, "b")
    assert match == ((0, "y"), (5 * MS, "b"))
    assert sync.finish().dropped_duplicate == [1, 0]


def test_hand_made_sequence_matches_message_filters_trace():
    """A sequence traced by hand through message_filters' ApproximateTimeSynchronizer.add."""
    sync = ApproximateTimeSync(2, queue_size=3, slop_s=0.03)
    events = [(0, 0), (0, 100), (1, 95), (1, 20), (0, 200), (0, 300), (0, 400), (1, 330), (1, 399)]
    # (0,0) (0,100): nothing in B; (1,95): A@100 (5) -> match (100, 95)
    # (1,20): A@0 is 20 away, spread 20 < 30 -> match (0, 20)
    # (0,200) (0,300): B empty; (0,400): A queue {200,300,400} fits queue_size 3
    # (1,330): A@300 (30 <= 30 candidate) spread 30 not < 30 -> none; (1,399): A@400 -> match
    assert feed(sync, events) == [(100, 95), (0, 20), (400, 399)]
    stats = sync.finish()
    assert stats.unmatched_at_end == [2, 1] and stats.dropped_overflow == [0, 0]


def test_invalid_arguments():
    with pytest.raises(ValueError):
        ApproximateTimeSync(1, 10, 0.05)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, 0, 0.05)
    with pytest.raises(ValueError):
        ApproximateTimeSync(2, 10, -1.0)
