"""The daemon's first scan, run by a child process while the daemon imports its FUSE stack.

Mounting spends its time on two things that do not depend on each other: importing pyfuse3
and trio (about 0.1 s whatever the store) and detecting the CPU and scanning the store (about
15 µs a name: 0.07 s at 5,000 names). The view sits before ``local-fs.target`` at boot and
the machine has more than one CPU, so ``mount`` forks a child that scans while it imports.

The scan comes back over a pipe (:mod:`hwcaps_fs.system.handshake`: the same program on both
ends) as it goes, :data:`NAMES_PER_MESSAGE` names a message, and the daemon loads them while
the child scans on (in a fifth of the time the scan took: the records pickle compactly,
:meth:`hwcaps_fs.core.model.StatRecord.__reduce__`): in a large store, only the last message
is left to load when the scan ends. Unpickling also holds what it made for a message until the
message ends: in one message, what the records were built from stayed in the daemon's memory
as holes between them (1.3 MB at 10,000 names). A child that fails or dies sends no whole
scan, and the daemon then scans by itself, meeting the same error the way it always would.

Nothing here may import pyfuse3 or trio: this module is imported before them, on purpose.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import gc
import os
import signal
from dataclasses import dataclass
from types import TracebackType

from hwcaps_fs.core.model import Candidate, Files, Store
from hwcaps_fs.detect.cpu import Detection, detect
from hwcaps_fs.errors import PathError
from hwcaps_fs.store.scan import scan_fd
from hwcaps_fs.system import handshake
from hwcaps_fs.system.preflight import MountPaths

#: How many names of the store each message carries (see the module's docstring).
NAMES_PER_MESSAGE = 1000

#: The pipe's capacity in bytes (Linux's default is 64 KiB): what the child scans before the
#: daemon starts reading (it is still importing) waits in the pipe, not in a blocked child.
PIPE_BYTES = 1 << 20


@dataclass(frozen=True)
class FirstScan:
    """What the daemon starts from: the CPU's detection and the store as scanned."""

    detection: Detection
    store: Store


def first_scan(paths: MountPaths, root_fd: int, files: Files | None = None, *,
               chdir: bool = False) -> FirstScan:
    """Detect the CPU and scan the store open as ``root_fd`` (baselines unread: serving
    needs no ELF facts of them; ``files`` and ``chdir``: see
    :func:`~hwcaps_fs.store.scan.scan_fd`)."""
    config = paths.config
    detection = detect(dataclasses.replace(config.detect_options, cross_check=False))
    store = scan_fd(root_fd, paths.root, detection.architecture, config.layout,
                    read_baselines=False, files=files, chdir=chdir)
    return FirstScan(detection, store)


class _Sending(Files):
    """The store's files as the scan fills them, sent :data:`NAMES_PER_MESSAGE` at a time
    as they come."""

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd
        self.pending: list[tuple[str, dict[str | None, Candidate]]] = []

    def __setitem__(self, relpath: str, found: dict[str | None, Candidate]) -> None:
        super().__setitem__(relpath, found)
        self.pending.append((relpath, found))
        if len(self.pending) == NAMES_PER_MESSAGE:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            handshake.write(self.fd, self.pending)
            self.pending = []


@dataclass(frozen=True)
class _End:
    """The last message: the scan with an empty ``store.files``, and how many names the
    messages before it carried."""

    first: FirstScan
    names: int


def _scan_and_send(paths: MountPaths, root_fd: int, fd: int) -> None:
    files = _Sending(fd)
    first = first_scan(paths, root_fd, files, chdir=True)  # the child's own working directory
    files.flush()
    store = dataclasses.replace(first.store, files={})
    handshake.write(fd, _End(dataclasses.replace(first, store=store), len(files)))


def _receive(fd: int) -> FirstScan | None:
    """The scan :func:`_scan_and_send` sent; None when a message is missing or odd."""
    files: Files = {}
    while isinstance(message := handshake.read(fd), list):
        files.update(message)
    if not isinstance(message, _End) or message.names != len(files):
        return None
    message.first.store.files = files
    return message.first


def open_root(root: str) -> int:
    """ROOT opened as a directory: everything the daemon reads goes through this fd, never
    through a path that its own mount could cover."""
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PathError(f"ROOT {root}: {exc.strerror}") from None


class ScanAhead:
    """The first scan of ``paths``' store, started in a child process as this object is made
    (ROOT is opened here, once, for the child and the daemon alike). :meth:`result` gives it
    in the process that serves, whichever that is (a daemon forked meanwhile inherits the
    pipe); :meth:`close` ends what is left in the process that made it: the child if it still
    runs, and the ROOT fd."""

    def __init__(self, paths: MountPaths) -> None:
        self.paths = paths
        self.root_fd = open_root(paths.root)
        self._parent = os.getpid()
        self._from_child, to_parent = os.pipe2(os.O_CLOEXEC)
        with contextlib.suppress(OSError):  # a smaller pipe only makes the child wait
            fcntl.fcntl(to_parent, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        self._child: int | None = os.fork()
        if self._child == 0:  # the scanning child: a result or nothing, never a return
            status = 1
            try:
                os.close(self._from_child)
                gc.disable()  # what it builds is sent, then it exits: nothing to collect
                _scan_and_send(paths, self.root_fd, to_parent)
                status = 0
            finally:
                os._exit(status)
        os.close(to_parent)

    def result(self) -> FirstScan:
        """The child's scan; this process's own when the child sent none."""
        fd, self._from_child = self._from_child, -1
        try:
            received = _receive(fd)
        finally:
            os.close(fd)
        if os.getpid() == self._parent:  # serving in the foreground: no zombie meanwhile
            self._reap(stop=False)
        return received or first_scan(self.paths, self.root_fd)

    def close(self) -> None:
        self._reap(stop=True)
        if self._from_child >= 0:
            os.close(self._from_child)
            self._from_child = -1
        os.close(self.root_fd)

    def _reap(self, *, stop: bool) -> None:
        """Reap the child; with ``stop``, kill it first (the mount failed before its scan was
        needed)."""
        if self._child is None:
            return
        if stop:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGKILL)
        os.waitpid(self._child, 0)
        self._child = None

    def __enter__(self) -> ScanAhead:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()
