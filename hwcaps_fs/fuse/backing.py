"""The files behind the view: a bounded set of open descriptors, by inode of the view.

An exec through the mount sends at most an OPEN (none with the kernel's no-open mode), and with
keep_cache the binary's bytes then come from the page cache: in steady state nothing is read.
What matters is that when a read does come, the bytes are those of the file the inode was
looked up as, even if the store has since renamed a new file over it or removed it (a package
manager upgrading or uninstalling while a process execs). Holding the file open is what makes
that possible: the descriptor still reaches the old content.

So a descriptor is opened when the kernel first learns an inode (:meth:`BackingFiles.ensure`,
from ``lookup``, ``readdir`` and ``open``), and kept while the kernel may read it, within a fixed
budget (:func:`descriptor_budget`): beyond it the least recently used descriptor is closed and
opened again on its next read, so that a store of any size is served with about a thousand
descriptors and EMFILE never reaches a caller. A file that cannot be opened as the one scanned
raises :class:`ReplacedError`; the caller then rescans that name and the kernel looks it up
again (the name switches cleanly to the new file).

Files are opened from the ROOT directory fd one component at a time without following
symlinks (the store already resolved them), so nothing here can cross the mount over ROOT, and
the file opened must be the one scanned (same device, inode and change time): anything else
means the store changed under us, and serving the new bytes under the old inode's size would
be corruption.
"""

from __future__ import annotations

import contextlib
import errno
import os
import resource
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterable

from hwcaps_fs.core.model import Candidate
from hwcaps_fs.store.fds import open_beneath


class ReplacedError(OSError):
    """The file at a candidate's source is no longer the one that was scanned."""

    def __init__(self, source: str) -> None:
        super().__init__(errno.ESTALE, f"{source} was replaced since it was scanned")


#: The most descriptors of served files open at once (the daemon needs a few dozen more).
DESCRIPTOR_BUDGET = 960

#: The fewest descriptors of served files the daemon works with, whatever RLIMIT_NOFILE says.
MIN_BUDGET = 8


def descriptor_budget() -> int:
    """How many backing files may be open: :data:`DESCRIPTOR_BUDGET`, or half the soft
    RLIMIT_NOFILE when that is lower (the rest is for scanning, watching and FUSE)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return DESCRIPTOR_BUDGET
    return max(MIN_BUDGET, min(DESCRIPTOR_BUDGET, soft // 2))


def raise_file_limit() -> None:
    """Raise the soft RLIMIT_NOFILE to the hard one: the budget above is taken from it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


#: Descriptors the daemon holds besides backing files (FUSE, inotify, ROOT, trio, scanning).
OTHER_DESCRIPTORS = 64


def grow_descriptor_table(fd: int, budget: int) -> None:
    """Have the kernel's descriptor table of the process hold ``budget`` backing files now,
    while the daemon has one thread (``fd``: any open descriptor, duplicated once). Each time
    the table must grow later, with threads running, the kernel waits for an RCU grace period:
    8 to 14 ms per doubling, measured, in the middle of a listing's opens."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    top = budget + OTHER_DESCRIPTORS
    if soft != resource.RLIM_INFINITY:
        top = min(top, soft - 1)
    os.close(os.dup2(fd, top, inheritable=False))


def _checked(fd: int, candidate: Candidate) -> int:
    """``fd`` if it is ``candidate``'s file (closed otherwise: :class:`ReplacedError`). The
    change time is compared too: a removed file's inode number may be reused at once."""
    st = os.fstat(fd)
    if (st.st_dev, st.st_ino, st.st_ctime_ns) != (candidate.dev, candidate.ino,
                                                   candidate.ctime_ns):
        os.close(fd)
        raise ReplacedError(candidate.source)
    return fd


def open_candidate(root_fd: int, candidate: Candidate,
                   directories: dict[str, int] | None = None) -> int:
    """An fd of ``candidate``'s source; :class:`ReplacedError` if it is another file now
    (``directories``: as :func:`~hwcaps_fs.store.fds.open_beneath` takes them)."""
    return _checked(open_beneath(root_fd, candidate.source, directories), candidate)


class BackingFiles:
    """Descriptors of served files by inode number of the view, at most ``budget`` open
    (least recently used closed first).

    Blocking: call :meth:`ensure` and :meth:`pread` from worker threads (:meth:`pread_cached`
    never blocks). Opening and reading happen outside the lock, so a file that is slow to open
    or read (a store on a network file system) holds up nothing else. A descriptor is never
    closed while a read uses it (its number could otherwise be reused by another open in
    between): one evicted while busy is closed by its last reader.
    """

    def __init__(self, root_fd: int, budget: int) -> None:
        self._root_fd = root_fd
        self._budget = budget
        self._fds: OrderedDict[int, int] = OrderedDict()
        self._busy: Counter[int] = Counter()
        self._evicted: set[int] = set()
        self._lock = threading.Lock()

    @property
    def budget(self) -> int:
        return self._budget

    def is_open(self, inode: int) -> bool:
        return inode in self._fds

    def ensure(self, inode: int, candidate: Candidate) -> None:
        """Have ``candidate``'s file open for ``inode``; :class:`ReplacedError` if another
        file is there now, OSError if it cannot be opened."""
        self._release(self._acquire(inode, candidate))

    def ensure_all(self, files: Iterable[tuple[int, Candidate]]) -> None:
        """:meth:`ensure` each ``(inode, candidate)``, skipping those that cannot be opened
        as the file scanned (they stay closed: :meth:`is_open` tells); each directory is
        opened once."""
        directories: dict[str, int] = {}
        try:
            for inode, candidate in files:
                with contextlib.suppress(OSError):
                    self._release(self._acquire(inode, candidate, directories))
        finally:
            for fd in directories.values():
                os.close(fd)

    def pread(self, inode: int, candidate: Candidate, offset: int, size: int) -> bytes:
        fd = self._acquire(inode, candidate)
        try:
            return os.pread(fd, size, offset)
        finally:
            self._release(fd)

    def _acquire(self, inode: int, candidate: Candidate,
                 directories: dict[str, int] | None = None) -> int:
        with self._lock:
            fd = self._fds.get(inode)
            if fd is not None:
                self._fds.move_to_end(inode)
                self._busy[fd] += 1
                return fd
        fd = self._open(candidate, directories)
        with self._lock:
            kept = self._fds.setdefault(inode, fd)
            self._fds.move_to_end(inode)
            self._busy[kept] += 1
            excess = len(self._fds) - self._budget
        if kept != fd:
            os.close(fd)
        self._evict(excess)
        return kept

    def pread_cached(self, inode: int, offset: int, size: int,
                     file_size: int) -> memoryview | None:
        """The bytes :meth:`pread` would return if the backing file is open and they are all
        in the page cache (``RWF_NOWAIT``: this never waits for a disk or a stalled store, so
        it may run in the event loop); None when that cannot be told without waiting. A
        short read is only an answer at the end of the file (``file_size``): the kernel takes
        any other for the end."""
        with self._lock:
            fd = self._fds.get(inode)
            if fd is None:
                return None
            self._fds.move_to_end(inode)
            self._busy[fd] += 1
        buffer = bytearray(size)
        try:
            count = os.preadv(fd, [buffer], offset, os.RWF_NOWAIT)
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a store that cannot tell
            return None
        finally:
            self._release(fd)
        if count < size and offset + count < file_size:
            return None
        return memoryview(buffer)[:count]  # not bytes(): a copy of 1 MiB costs over 1 ms

    def _release(self, fd: int) -> None:
        with self._lock:
            self._busy[fd] -= 1
            if self._busy[fd]:
                return
            del self._busy[fd]
            if fd not in self._evicted:
                return
            self._evicted.remove(fd)
        os.close(fd)

    def _open(self, candidate: Candidate, directories: dict[str, int] | None) -> int:
        """Open ``candidate``; on EMFILE or ENFILE, close half the open files and retry once
        (another part of the daemon may be holding many descriptors for a moment)."""
        try:
            return open_candidate(self._root_fd, candidate, directories)
        except OSError as exc:
            if exc.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        self._evict(len(self._fds) // 2 + 1)
        return open_candidate(self._root_fd, candidate, directories)

    def _evict(self, count: int) -> None:
        """Close the ``count`` least recently used descriptors."""
        with self._lock:
            fds = [self._fds.popitem(last=False)[1] for _ in range(min(count, len(self._fds)))]
        self._close(fds)

    def _close(self, fds: list[int]) -> None:
        with self._lock:
            idle = [fd for fd in fds if not self._busy[fd]]
            self._evicted.update(fd for fd in fds if self._busy[fd])
        for fd in idle:
            os.close(fd)

    def discard(self, inodes: list[int]) -> None:
        with self._lock:
            fds = [self._fds.pop(inode) for inode in inodes if inode in self._fds]
        self._close(fds)

    def __len__(self) -> int:
        return len(self._fds)

    def close(self) -> None:
        self.discard(list(self._fds))
