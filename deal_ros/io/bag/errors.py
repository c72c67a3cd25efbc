"""BagError and the reader's own exceptions, so that a broken bag reaches the user as one line.

Only the errors rosbags and its storage back ends raise for an unreadable file are translated; any
other exception is a bug in this package and keeps its traceback.
"""

from __future__ import annotations

import functools
import sqlite3
import struct

from deal_ros.errors import DealRosError

__all__ = ["RECOVERY_HINT", "BagError", "deserialize_errors", "reader_errors"]


class BagError(DealRosError, ValueError):
    """A bag cannot be used as asked (missing, empty, corrupt, topic absent); a one-line user message."""


RECOVERY_HINT = (
    "if the recording was interrupted, repair it first: `mcap recover` for .mcap, "
    "`ros2 bag reindex` when metadata.yaml is missing"
)


@functools.cache
def reader_errors() -> tuple[type[BaseException], ...]:
    """Exceptions that mean "this file is not a readable bag" (truncated, corrupt, wrong format, unreadable).

    rosbags wraps most failures in its ReaderError / AnyReaderError; the storage layers below it
    (sqlite3 through apsw, mcap's zstd chunks, raw struct reads, file I/O) can still raise their own.
    """
    from rosbags.rosbag1 import ReaderError as Reader1Error
    from rosbags.rosbag2 import ReaderError as Reader2Error

    errors: tuple[type[BaseException], ...] = (
        Reader1Error,
        Reader2Error,
        *deserialize_errors(),
        sqlite3.DatabaseError,
        struct.error,
        EOFError,
        OSError,
    )
    try:
        import apsw  # rosbags' sqlite3 binding

        errors += (apsw.Error,)
    except ImportError:
        pass
    try:
        from compression import zstd  # type: ignore[import-not-found]  # Python >= 3.14
    except ImportError:
        try:
            from backports import zstd  # a dependency of rosbags
        except ImportError:
            zstd = None
    if zstd is not None:
        errors += (zstd.ZstdError,)
    return errors


@functools.cache
def deserialize_errors() -> tuple[type[BaseException], ...]:
    """What AnyReader.deserialize raises for bytes that are not a message of their type."""
    from rosbags.highlevel import AnyReaderError
    from rosbags.serde import SerdeError

    return (AnyReaderError, SerdeError)
