"""The word a background process sends the process waiting for it: how it went, or what it
made.

``mount`` waits for its detached daemon to serve, ``run`` for its keeper to make the view
appear; both hear either a success (a string: what is ready) or the exception to raise. The
daemon hears the store its first scan found, in several messages
(:mod:`hwcaps_fs.fuse.first_scan`). Each travels over a pipe as a length-prefixed pickle
(parent and child are the same program, so any exception travels, with its class and
message). A child that dies before a word leaves the pipe empty.
"""

from __future__ import annotations

import os
import pickle
import struct

from hwcaps_fs.errors import MountError

_LENGTH = struct.Struct("!I")

#: How a wait ended: what is ready, or the error to raise.
Outcome = str | BaseException


def send(fd: int, outcome: object) -> None:
    """Send ``outcome`` on the pipe end ``fd``, then close it. The waiting side may be gone
    (it was killed): that is not an error here."""
    try:
        payload = pickle.dumps(outcome)
    except Exception:
        payload = pickle.dumps(MountError(f"{type(outcome).__name__}: {outcome}"))
    try:
        _write(fd, payload)
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def receive(fd: int) -> object | None:
    """The outcome sent on the pipe end ``fd`` (closed afterwards); None when the other side
    ended without sending one."""
    try:
        return read(fd)
    finally:
        os.close(fd)


def write(fd: int, message: object) -> None:
    """Send ``message`` on ``fd``, which stays open for more (OSError if the other side is
    gone, pickle's error if it cannot travel)."""
    _write(fd, pickle.dumps(message))


def read(fd: int) -> object | None:
    """The next message on ``fd``; None when the other side ended before a whole one."""
    header = _read_exactly(fd, _LENGTH.size)
    payload = header and _read_exactly(fd, _LENGTH.unpack(header)[0])
    if not payload:
        return None
    message: object = pickle.loads(payload)
    return message


def _write(fd: int, payload: bytes) -> None:
    data = memoryview(_LENGTH.pack(len(payload)) + payload)
    while data:
        data = data[os.write(fd, data):]


def _read_exactly(fd: int, size: int) -> bytearray | None:
    data = bytearray(size)
    view, done = memoryview(data), 0
    while done < size:  # a pipe gives 64 KiB at a time: filled in place, not joined
        count = os.readv(fd, [view[done:]])
        if not count:
            return None
        done += count
    return data
