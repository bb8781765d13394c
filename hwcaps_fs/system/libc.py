"""The C library, for the system calls Python 3.11's ``os`` lacks (unshare, mount, umount2,
prctl, inotify), and malloc_trim.

Every wrapper checks its result with :func:`check`, which raises :class:`OSError` with the
errno as ``os`` functions do, so callers can tell "not permitted here" from a real failure.
"""

from __future__ import annotations

import ctypes
import os

libc = ctypes.CDLL(None, use_errno=True)
libc.unshare.argtypes = [ctypes.c_int]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong,
                       ctypes.c_char_p]
libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong,
                       ctypes.c_ulong]
libc.malloc_trim.argtypes = [ctypes.c_size_t]


def check(result: int, what: str | None = None) -> int:
    """``result`` of a libc call, or the :class:`OSError` its errno says when it is negative
    (``what``, a path or the call's name, becomes the error's ``filename``)."""
    if result < 0:
        code = ctypes.get_errno()
        if what is None:
            raise OSError(code, os.strerror(code))
        raise OSError(code, os.strerror(code), what)
    return result
