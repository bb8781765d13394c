"""The fast path: zero requests to the daemon per exec (docs/fast-path.md).

The C library ``hwcaps_fs/fuse/_fastpath.c``, built with the package, wraps libfuse's session
constructor so that the kernel opens files of the view without asking the daemon (no-open),
caches directory listings and caches symlinks. It only works when it is loaded into the
global symbol scope *before* pyfuse3's extension is imported, which is why the package's
``__init__`` calls :func:`load`: every module that imports pyfuse3 is a module of this package.

Whether it is on is known from the library's counters once pyfuse3 has built its session and
the kernel has answered INIT (:func:`exec_path`). Anything in between (not built, not loaded, a
libc without ``dlvsym``, a kernel without no-open support, ``-o fastpath=off``) leaves the
daemon serving as stock pyfuse3 does, one request per exec, and :func:`exec_path` says why.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys

#: The library's module name (an extension file, but loaded with ctypes, never imported).
LIBRARY = "hwcaps_fs.fuse._fastpath"

#: The fields of ``struct hwcaps_fastpath_state`` in _fastpath.c, in order.
FIELDS = ("size", "disabled", "sessions", "unwrapped", "lookup_failures", "inits", "no_open",
          "cache_symlinks", "opens_declined", "reads", "opendirs", "libfuse_version")


class _State(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in FIELDS]


_state: _State | None = None
_unavailable: str | None = None
_disabled = False


def library_path() -> str | None:
    """Where the built library is, or None if the package was installed without it."""
    spec = importlib.util.find_spec(LIBRARY)
    return spec.origin if spec is not None else None


def load() -> None:
    """Load the library into the global scope, once; a failure is remembered, not raised
    (the daemon then serves without the fast path and says why)."""
    global _state, _unavailable
    if _state is not None or _unavailable is not None:
        return
    if "pyfuse3" in sys.modules:
        _unavailable = "loaded after pyfuse3 (it must come first)"
        return
    path = library_path()
    if path is None:
        _unavailable = "not built (no C compiler or libfuse3 headers when installed)"
        return
    try:
        library = ctypes.CDLL(path, mode=os.RTLD_NOW | os.RTLD_GLOBAL)
        state = _State.in_dll(library, "hwcaps_fastpath_state")
    except (OSError, ValueError) as exc:
        _unavailable = f"cannot load {path}: {exc}"
        return
    if state.size != ctypes.sizeof(_State):
        _unavailable = f"{path} is from another version of hwcaps-fs"
        return
    _state = state


def disable() -> None:
    """Build the next sessions as pyfuse3 asks (``-o fastpath=off``)."""
    global _disabled
    _disabled = True
    if _state is not None:
        _state.disabled = 1


def _why_not(symlinks: bool) -> str | None:
    """Why execs send a request to the daemon, or None when they do not."""
    if _disabled:
        return "fast path off: -o fastpath=off"
    if _state is None:
        return f"fast path not loaded: {_unavailable}"
    if not _state.sessions:
        return ("fast path not used: libfuse was not found from pyfuse3"
                if _state.lookup_failures else "fast path not used: the session was not wrapped")
    if not _state.inits:
        return None  # the kernel has not answered yet: assume it can
    if symlinks and not _state.cache_symlinks:
        return "the kernel cannot cache symlinks"
    if not symlinks and not _state.no_open:
        return "the kernel has no no-open support"
    return None


def exec_path(*, symlinks: bool) -> str:
    """What an exec through the view costs, in words for the log, systemd's STATUS= and the
    ``user.hwcaps.exec-path`` attribute of the mount's root: ``zero-request (no-open)`` or
    ``one request per exec (<why>)``. ``symlinks``: the names are presented as symlinks."""
    reason = _why_not(symlinks)
    if reason is not None:
        return f"one request per exec ({reason})"
    return "zero-request (cached symlinks)" if symlinks else "zero-request (no-open)"
