"""The files behind the view: opened when the view starts serving them, kept while it does.

An exec through the mount sends OPEN; with keep_cache the binary's bytes then come from the
page cache, so in steady state nothing is ever read and ``open`` must not touch the disk
(docs/fuse.md). The backing file of every file the view serves is therefore opened
before the view is (:meth:`BackingFiles.open_all`), and kept open for as long as the view
serves that inode or the kernel may ask for it. Opening it on the first READ instead would
leave a window in which the store removes or replaces the served variant before anything was
read, and every exec in that window fails, although the view still (rightly) shows the name:
a package manager removing a variant package hits it (the soak did, bench/soak.py). Keeping
the file open is also what lets an old inode keep working after its file was replaced by a
rename: the descriptor still reaches the old content, which is exactly what a process that
looked the name up before the update expects.

Files are opened from the ROOT directory fd one component at a time without following
symlinks (the store already resolved them), so nothing here can cross the mount over ROOT, and
the file opened must be the one scanned (same device and inode): anything else means the store
changed under us, and serving the new bytes under the old inode's size would be corruption.
"""

from __future__ import annotations

import errno
import os
import posixpath
import threading
from collections.abc import Iterable

from hwcaps_fs.core.model import Candidate
from hwcaps_fs.errors import show
from hwcaps_fs.store.fds import OPEN_FILE_FLAGS, open_beneath, open_dir_beneath


class ReplacedError(OSError):
    """The file at a candidate's source is no longer the one that was scanned."""

    def __init__(self, source: str) -> None:
        super().__init__(errno.ESTALE, f"{source} was replaced since it was scanned")


def _checked(fd: int, candidate: Candidate) -> int:
    """``fd`` if it is ``candidate``'s file (closed otherwise: :class:`ReplacedError`)."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino) != (candidate.dev, candidate.ino):
        os.close(fd)
        raise ReplacedError(candidate.source)
    return fd


def open_candidate(root_fd: int, candidate: Candidate) -> int:
    """An fd of ``candidate``'s source; :class:`ReplacedError` if it is another file now."""
    return _checked(open_beneath(root_fd, candidate.source), candidate)


class BackingFiles:
    """Descriptors of the served candidates, by inode number of the view.

    Blocking: call :meth:`open_all` and :meth:`pread` from a worker thread
    (:meth:`pread_cached` never blocks). :meth:`discard`
    closes what neither the view nor the kernel will ask for again. Opening happens outside
    the lock, so a file that is slow to open (a store on a network file system) holds up no
    other read and no discard.
    """

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._fds: dict[int, int] = {}
        self._lock = threading.Lock()

    def open_all(self, files: Iterable[tuple[int, Candidate]]) -> list[str]:
        """Open the file behind each inode of ``files`` that is not open yet; returns one
        warning per file that could not be opened (its first read tries again)."""
        warnings = []
        directories: dict[str, int] = {}
        try:
            for inode, candidate in files:
                if inode in self._fds:
                    continue
                reldir, name = posixpath.split(candidate.source)
                try:
                    dir_fd = directories.get(reldir)
                    if dir_fd is None:
                        dir_fd = directories[reldir] = open_dir_beneath(self._root_fd, reldir)
                    fd = os.open(name, OPEN_FILE_FLAGS, dir_fd=dir_fd)
                    self._keep(inode, _checked(fd, candidate))
                except OSError as exc:
                    warnings.append(f"cannot open {show(candidate.source)}: {exc.strerror}")
        finally:
            for dir_fd in directories.values():
                os.close(dir_fd)
        return warnings

    def pread(self, inode: int, candidate: Candidate, offset: int, size: int) -> bytes:
        fd = self._fds.get(inode)
        if fd is None:
            fd = self._keep(inode, open_candidate(self._root_fd, candidate))
        return os.pread(fd, size, offset)

    def pread_cached(self, inode: int, offset: int, size: int,
                     file_size: int) -> memoryview | None:
        """The bytes :meth:`pread` would return if the backing file is open and they are all
        in the page cache (``RWF_NOWAIT``: this never waits for a disk or a stalled store, so
        it may run in the event loop); None when that cannot be told without waiting. A
        short read is only an answer at the end of the file (``file_size``): the kernel takes
        any other for the end."""
        fd = self._fds.get(inode)
        if fd is None:
            return None
        buffer = bytearray(size)
        try:
            count = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a store that cannot tell
            return None
        if count < size and offset + count < file_size:
            return None
        return memoryview(buffer)[:count]  # not bytes(): a copy of 1 MiB costs over 1 ms

    def _keep(self, inode: int, fd: int) -> int:
        """Record ``fd`` for ``inode``, unless another thread was first: then use its."""
        with self._lock:
            kept = self._fds.setdefault(inode, fd)
        if kept != fd:
            os.close(fd)
        return kept

    def discard(self, inodes: list[int]) -> None:
        with self._lock:
            fds = [self._fds.pop(inode) for inode in inodes if inode in self._fds]
        for fd in fds:
            os.close(fd)

    def close(self) -> None:
        self.discard(list(self._fds))
