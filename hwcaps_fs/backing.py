"""The files behind the view: opened on the first read, kept while the kernel knows the inode.

An exec through the mount sends OPEN; with keep_cache the binary's bytes then come from the
page cache, so in steady state nothing is ever read and ``open`` must not touch the disk
(research/fuse-floor.md). The backing file is therefore opened on the first READ of an inode
and kept open for as long as the kernel may ask for that inode again. Keeping it open is also
what lets an old inode keep working after its file was replaced by a rename: the descriptor
still reaches the old content, which is exactly what a process that looked the name up before
the update expects.

Files are opened from the ROOT directory fd one component at a time without following
symlinks (the store already resolved them), so nothing here can cross the mount over ROOT, and
the file opened must be the one scanned (same device and inode): anything else means the store
changed under us, and serving the new bytes under the old inode's size would be corruption.
"""

from __future__ import annotations

import errno
import os
import threading

from hwcaps_fs.store import OPEN_DIR_FLAGS, OPEN_FILE_FLAGS, Candidate


class ReplacedError(OSError):
    """The file at a candidate's source is no longer the one that was scanned."""

    def __init__(self, source: str) -> None:
        super().__init__(errno.ESTALE, f"{source} was replaced since it was scanned")


def open_beneath(root_fd: int, relpath: str) -> int:
    """Open ``relpath`` (ROOT-relative, already free of symlinks) read-only from ``root_fd``,
    refusing symlinks and ``..`` at every step."""
    *directories, name = relpath.split("/")
    if ".." in directories or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, f"not a path inside the store: {relpath}")
    fd = os.open(".", OPEN_DIR_FLAGS, dir_fd=root_fd)
    try:
        for part in directories:
            sub = os.open(part, OPEN_DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = sub
        return os.open(name, OPEN_FILE_FLAGS, dir_fd=fd)
    finally:
        os.close(fd)


def open_candidate(root_fd: int, candidate: Candidate) -> int:
    """An fd of ``candidate``'s source; :class:`ReplacedError` if it is another file now."""
    fd = open_beneath(root_fd, candidate.source)
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (candidate.dev, candidate.ino):
        os.close(fd)
        raise ReplacedError(candidate.source)
    return fd


class BackingFiles:
    """Descriptors of the served candidates, by inode number of the view.

    Blocking: call :meth:`pread` from a worker thread. :meth:`discard` closes what the kernel
    will never ask for again (an inode it forgot).
    """

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def pread(self, inode: int, candidate: Candidate, offset: int, size: int) -> bytes:
        with self._lock:
            fd = self._fds.get(inode)
            if fd is None:
                fd = self._fds[inode] = open_candidate(self._root_fd, candidate)
        return os.pread(fd, size, offset)

    def discard(self, inodes: list[int]) -> None:
        with self._lock:
            fds = [self._fds.pop(inode) for inode in inodes if inode in self._fds]
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        self.discard(list(self._fds))
