"""The word a background process sends the process waiting for it: how it went.

``mount`` waits for its detached daemon to serve, ``run`` for its keeper to make the view
appear; both hear either a success (a string: what is ready) or the exception to raise, over a
pipe, as a length-prefixed pickle (parent and child are the same program, so any exception
travels, with its class and message). A child that dies before a word leaves the pipe empty.
"""

from __future__ import annotations

import os
import pickle
import struct

from hwcaps_fs.errors import MountError

_LENGTH = struct.Struct("!I")

Outcome = str | BaseException


def send(fd: int, outcome: Outcome) -> None:
    """Send ``outcome`` on the pipe end ``fd``, then close it. The waiting side may be gone
    (it was killed): that is not an error here."""
    try:
        payload = pickle.dumps(outcome)
    except Exception:
        payload = pickle.dumps(MountError(f"{type(outcome).__name__}: {outcome}"))
    data = _LENGTH.pack(len(payload)) + payload
    try:
        while data:
            data = data[os.write(fd, data):]
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def receive(fd: int) -> Outcome | None:
    """The outcome sent on the pipe end ``fd`` (closed afterwards); None when the other side
    ended without sending one."""
    try:
        header = _read_exactly(fd, _LENGTH.size)
        payload = header and _read_exactly(fd, _LENGTH.unpack(header)[0])
    finally:
        os.close(fd)
    if not payload:
        return None
    outcome: Outcome = pickle.loads(payload)
    return outcome


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
