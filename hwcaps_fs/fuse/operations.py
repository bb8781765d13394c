"""The FUSE request handlers: each one a dictionary lookup into the view and a prebuilt reply.

Every exec through the mount waits for at least one of these handlers (OPEN, or READLINK in
the symlink presentation), so they are written to the floor of stock pyfuse3 (docs/fuse.md):

* entries and attributes are cached by the kernel for a day (:data:`CACHE_TIMEOUT`); an update
  is a new inode number plus one invalidated directory entry (:meth:`HwcapsOperations.swap`);
* ``open`` returns a prebuilt FileInfo with ``keep_cache``; the file handle is the inode
  number itself, since pyfuse3's ``read`` only gets the handle (and with the kernel's no-open
  mode ``read`` gets the inode without any ``open``);
* the backing file is opened when the kernel learns the inode (``lookup``, ``readdir``), so
  that a file renamed over or removed afterwards still serves the bytes the inode stands for;
  one that is already another file then makes the name rescanned and looked up afresh
  (:meth:`HwcapsOperations._backed`): an exec sees the old file or the new one, never an error;
* ``release`` returns at once and ``flush`` declines for good (ENOSYS): both sit on the exec path;
* the mount is nosuid, so the kernel never asks ``security.capability`` at exec; extended
  attributes are answered from memory (``xattr=off`` declines them all with ENOSYS, which makes
  ``ls -l`` cheap at the cost of ``user.hwcaps.*``);
* blocking work (reads that could wait, statfs) runs in worker threads: one stuck handler
  would stall every exec; what is already in memory is read in the event loop.

The mount is always ``ro``, so the kernel refuses every write itself and no handler that would
write is defined (pyfuse3's defaults answer ENOSYS; ``open`` for writing answers EROFS). A
handler that fails unexpectedly answers EIO and logs one line: pyfuse3 lets any exception other
than FUSEError end its main loop, which would take every mounted name away.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import posixpath
import queue
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import pyfuse3
import trio

from hwcaps_fs.core.view import Attributes, Node, Update, View
from hwcaps_fs.fuse import fastpath
from hwcaps_fs.fuse.backing import BackingFiles, ReplacedError

if TYPE_CHECKING:
    import outcome  # trio's, for the type of a thread's result

log = logging.getLogger(__name__)

#: The only namespace of extended attributes the view has. Asked for another (ls -l asks for
#: security.selinux and system.posix_acl_access of every entry), getxattr answers EOPNOTSUPP,
#: not ENODATA: ls then stops asking for the rest of the file system, two requests per listing
#: instead of two per entry, and user.hwcaps.* still answer.
USER_NAMESPACE = b"user."

#: The attribute of the mount's root that tells what an exec costs (hwcaps_fs.fastpath).
EXEC_PATH_XATTR = b"user.hwcaps.exec-path"

#: Entry and attribute timeout in seconds: a day, with explicit invalidation on every change.
CACHE_TIMEOUT = 86400.0

#: How long a lookup or open waits for the backing file it opens: a store on a stalled file
#: system must not hold up the name's lookup (and with it the listing of its directory).
OPEN_WAIT = 0.5

#: How many backing files a listing opens in one go (a READDIRPLUS reply holds about 200
#: entries here; the kernel does not say how many in advance).
PIN_BATCH = 128

#: How many times a lookup rescans a name whose file keeps being replaced under it before it
#: answers what it has (the next read then reports the error).
REFRESH_TRIES = 3

_Params = ParamSpec("_Params")
_Result = TypeVar("_Result")


def guarded(
    handler: Callable[_Params, Coroutine[Any, Any, _Result]],
) -> Callable[_Params, Coroutine[Any, Any, _Result]]:
    """Turn an unexpected exception in ``handler`` into a logged EIO instead of a dead daemon."""

    @functools.wraps(handler)
    async def guarded(*args: _Params.args, **kwargs: _Params.kwargs) -> _Result:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except Exception as exc:
            log.error("internal error in %s (answered EIO): %r", handler.__name__, exc,
                      exc_info=log.isEnabledFor(logging.DEBUG))
            raise pyfuse3.FUSEError(errno.EIO) from None

    return guarded


def entry_attributes(attributes: Attributes,
                     entry_timeout: float = CACHE_TIMEOUT) -> pyfuse3.EntryAttributes:
    """The pyfuse3 reply for ``attributes``, with the long cache timeouts (or none for the
    entry: the kernel then looks the name up before using it)."""
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = attributes.ino
    entry.generation = 0
    entry.entry_timeout = entry_timeout
    entry.attr_timeout = CACHE_TIMEOUT
    entry.st_mode = attributes.mode
    entry.st_nlink = attributes.nlink
    entry.st_uid = attributes.uid
    entry.st_gid = attributes.gid
    entry.st_rdev = 0
    entry.st_size = attributes.size
    entry.st_blksize = 4096
    entry.st_blocks = attributes.blocks
    entry.st_atime_ns = attributes.atime_ns
    entry.st_mtime_ns = attributes.mtime_ns
    entry.st_ctime_ns = attributes.ctime_ns
    return entry


@dataclass(frozen=True)
class Reply:
    """What the handlers answer about one inode, built once per view."""

    node: Node
    entry: pyfuse3.EntryAttributes
    file_info: pyfuse3.FileInfo | None

    @classmethod
    def of(cls, node: Node) -> Reply:
        is_file = node.served is not None and node.link_target is None
        file_info = pyfuse3.FileInfo(fh=node.inode, keep_cache=True) if is_file else None
        return cls(node, entry_attributes(node.attributes), file_info)

    @functools.cached_property
    def unopened(self) -> pyfuse3.EntryAttributes:
        """What a listing hands out for a file whose backing file is not open: the
        attributes, but an entry the kernel looks up before using it (the lookup opens it)."""
        return entry_attributes(self.node.attributes, entry_timeout=0.0)


_NO_CHILDREN: Mapping[bytes, int] = {}


class HwcapsOperations(pyfuse3.Operations):
    """The read-only merged view, served from a :class:`~hwcaps_fs.core.view.View`.

    ``swap`` installs a new view. Inodes that left the view but that the kernel may still use
    (its lookup count is not zero) are *retired*, not dropped: a process that looked the name
    up before the update still gets its attributes and its old file's bytes. Replies are
    built when an inode is first asked about: most names of a large store never are.
    """

    supports_dot_lookup = False

    def __init__(self, view: View, backing: BackingFiles, root_fd: int, *,
                 xattrs: bool, refresh: Callable[[str], Awaitable[None]],
                 symlinks: bool = False,
                 on_init: Callable[[str], None] = lambda exec_path: None) -> None:
        super().__init__()
        self._symlinks = symlinks
        self._on_init = on_init
        self._root_xattrs: dict[bytes, bytes] = {}
        self._view = view
        self._replies: dict[int, Reply] = {}
        self._retired: dict[int, Reply] = {}
        self._lookups: Counter[int] = Counter()
        self._backing = backing
        self._root_fd = root_fd
        self._xattrs = xattrs
        self._refresh = refresh
        self._forgotten = _EntryNotices()

    def init(self) -> None:
        """The kernel answered INIT: what an exec costs is known now (hwcaps_fs.fastpath);
        the mount's root shows it as ``user.hwcaps.exec-path``."""
        exec_path = fastpath.exec_path(symlinks=self._symlinks)
        self._root_xattrs[EXEC_PATH_XATTR] = exec_path.encode()
        self._on_init(exec_path)

    # -- the view ------------------------------------------------------------------------

    def _reply(self, inode: int) -> Reply:
        reply = self._replies.get(inode) or self._retired.get(inode)
        if reply is None:
            node = self._view.nodes.get(inode)
            if node is None:
                raise pyfuse3.FUSEError(errno.ENOENT)
            reply = self._replies[inode] = Reply.of(node)
        return reply

    async def swap(self, update: Update) -> None:
        """Serve ``update.view`` from now on and make the kernel forget what changed."""
        gone = update.removed
        self._retired.update((ino, self._reply(ino)) for ino in gone if self._lookups[ino])
        for ino in (*gone, *update.changed):
            self._replies.pop(ino, None)
        self._view = update.view
        await self._discard([ino for ino in gone if not self._lookups[ino]])
        for parent, name in update.entries:
            self._forgotten.entry(parent, name)
        for inode in update.changed:
            await trio.to_thread.run_sync(_invalidate_directory, inode)

    def forget_unopened(self, relpaths: Iterable[str]) -> None:
        """Make the kernel forget the entries of the view paths ``relpaths`` whose backing
        files are not open (never opened, or closed to stay within the budget): the store
        changed there and the view does not show it yet. Their next use is then a lookup,
        which opens the file or finds it replaced; a READ through the cached entry, which
        with the fast path nothing would precede, could find the file gone."""
        view = self._view
        for relpath in relpaths:
            directory, name = posixpath.split(relpath)
            parent = view.directories.get(directory)
            if parent is None:
                continue
            inode = view.children.get(parent, _NO_CHILDREN).get(os.fsencode(name))
            if inode is not None and not self._backing.is_open(inode):
                self._forgotten.entry(parent, os.fsencode(name))

    async def stop_forgetting(self) -> None:
        """Before the main loop ends (in it): drop the entries still to invalidate and wait
        for the one being sent, which may wait for a request the loop has yet to answer (at
        most :data:`NOTICE_WAIT`)."""
        self._forgotten.stop()
        await trio.to_thread.run_sync(self._forgotten.wait, NOTICE_WAIT)

    def stop_forgetting_now(self) -> None:
        """Once the main loop has ended, before the session is closed: as
        :meth:`stop_forgetting` (the connection may be gone, or a request never answered:
        hwcaps_fs.system.guard ends a daemon left waiting in the kernel)."""
        self._forgotten.stop()
        self._forgotten.wait(NOTICE_WAIT)

    async def _discard(self, inodes: list[int]) -> None:
        if inodes:
            await trio.to_thread.run_sync(self._backing.discard, inodes)

    async def _backed(self, inode: int) -> bool:
        """Have the backing file of a file inode open (a dictionary lookup when it is);
        False when its source is another file now: the caller has the name rescanned. An open
        that takes longer than :data:`OPEN_WAIT` goes on in its thread while the caller
        answers (the read then waits for the file, as it would have)."""
        reply = self._reply(inode)
        candidate = reply.node.served
        if reply.file_info is None or candidate is None or self._backing.is_open(inode):
            return True
        opened = await _within(OPEN_WAIT, functools.partial(self._backing.ensure, inode,
                                                            candidate))
        try:
            if opened is not None:
                opened.unwrap()
        except (ReplacedError, FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            log.warning("cannot open %s: %s", candidate.source, exc.strerror)
        return True

    # -- lookups -------------------------------------------------------------------------

    @guarded
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        for _ in range(REFRESH_TRIES):
            inode = self._child(parent_inode, name)
            relpath = self._reply(inode).node.relpath
            if not await self._backed(inode):
                await self._refresh(relpath)
            elif inode in self._view.nodes:
                break
            # else an update replaced the inode while its file was being opened: again
        else:
            inode = self._child(parent_inode, name)
        self._lookups[inode] += 1
        return self._reply(inode).entry

    def _child(self, parent_inode: int, name: bytes) -> int:
        inode = self._view.children.get(parent_inode, _NO_CHILDREN).get(name)
        if inode is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return inode

    @guarded
    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        forgotten = []
        for inode, count in inode_list:
            self._lookups[inode] -= count
            if self._lookups[inode] <= 0:
                del self._lookups[inode]
                if self._retired.pop(inode, None):
                    forgotten.append(inode)
        await self._discard(forgotten)

    @guarded
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._reply(inode).entry

    @guarded
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        target = self._reply(inode).node.link_target
        if target is None:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return target

    # -- files ---------------------------------------------------------------------------

    @guarded
    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        if flags & os.O_ACCMODE != os.O_RDONLY:
            raise pyfuse3.FUSEError(errno.EROFS)
        reply = self._reply(inode)
        if reply.file_info is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if not await self._backed(inode):
            # The kernel retries the whole open once with a fresh lookup on ESTALE.
            await self._refresh(reply.node.relpath)
            raise pyfuse3.FUSEError(errno.ESTALE)
        return reply.file_info

    # pyfuse3 replies with any buffer (PyObject_GetBuffer), though its stub says bytes.
    @guarded
    async def read(  # type: ignore[override]
            self, fh: int, off: int, size: int) -> bytes | memoryview:
        node = self._reply(fh).node
        candidate = node.served
        if candidate is None:
            raise pyfuse3.FUSEError(errno.EISDIR)
        # Bytes the backing file has in memory are read here; only a read that could wait
        # (cold, or a store that cannot tell) goes to a worker thread, so a stalled store
        # holds up that read alone.
        cached = self._backing.pread_cached(fh, off, size, node.attributes.size)
        if cached is not None:
            return cached
        try:
            return await trio.to_thread.run_sync(self._backing.pread, fh, candidate, off, size)
        except ReplacedError as exc:
            log.warning("cannot serve %s: %s", candidate.path, exc.strerror)
            await self._refresh(node.relpath)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as exc:
            log.warning("cannot read %s: %s", candidate.source, exc.strerror)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        return None

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    # -- directories ---------------------------------------------------------------------

    @guarded
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if inode not in self._view.listing:
            raise pyfuse3.FUSEError(errno.ENOTDIR if inode in self._view.nodes else errno.ENOENT)
        return inode

    @guarded
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        # The handle is the directory's inode: no state per open, since the fast path lets
        # the kernel keep the listing across opens (hwcaps_fs.fastpath).
        view = self._view
        listing = view.listing.get(fh, ())
        # In a directory larger than the descriptor budget, the files listed first would be
        # closed again before the listing ends: they are not opened, and listed as before.
        unpinned = len(listing) - self._backing.budget
        pinned = max(start_id, unpinned)
        for index in range(start_id, len(listing)):
            name, inode = listing[index]
            if index >= pinned:
                pinned = index + PIN_BATCH
                await self._pin(listing[index:pinned])
                if self._view is not view:  # an update came meanwhile: list the new view
                    view = self._view
                    listing = view.listing.get(fh, ())
                    if index >= len(listing):
                        break
                    name, inode = listing[index]
            try:
                reply = self._reply(inode)
            except pyfuse3.FUSEError:
                continue
            opened = (reply.file_info is None or index < unpinned
                      or self._backing.is_open(inode))
            entry = reply.entry if opened else reply.unopened
            if not pyfuse3.readdir_reply(token, name, entry, index + 1):
                break
            self._lookups[inode] += 1

    async def _pin(self, listing: Sequence[tuple[bytes, int]]) -> None:
        """Have the backing files of the files in ``listing`` open, as a lookup would (in one
        thread, waited for at most :data:`OPEN_WAIT`). A listing hands the kernel entries it
        uses without asking (READDIRPLUS): with the fast path no OPEN follows, so a file
        renamed over before the daemon follows would be gone at the first READ (EIO). A file
        that cannot be opened as the one scanned is listed with an entry the kernel looks up
        before using it (the lookup rescans it), as is one whose open is still going on."""
        files = []
        for _name, inode in listing:
            node = self._view.nodes.get(inode)
            if node is None or node.served is None or node.link_target is not None:
                continue  # gone meanwhile, a directory, a symlink
            if not self._backing.is_open(inode):
                files.append((inode, node.served))
        if files:
            await _within(OPEN_WAIT, functools.partial(self._backing.ensure_all, files))

    async def releasedir(self, fh: int) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None

    @guarded
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        found = await trio.to_thread.run_sync(os.fstatvfs, self._root_fd)
        data = pyfuse3.StatvfsData()
        for field in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files",
                      "f_ffree", "f_favail", "f_namemax"):
            setattr(data, field, getattr(found, field))
        return data

    # -- extended attributes -------------------------------------------------------------

    @guarded
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if not name.startswith(USER_NAMESPACE):
            raise pyfuse3.FUSEError(errno.EOPNOTSUPP)
        value = self._xattrs_of(inode).get(name)
        if value is None:
            raise pyfuse3.FUSEError(pyfuse3.ENOATTR)
        return value

    @guarded
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> list[bytes]:
        if not self._xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return list(self._xattrs_of(inode))

    def _xattrs_of(self, inode: int) -> Mapping[bytes, bytes]:
        xattrs = self._reply(inode).node.xattrs or {}
        return {**xattrs, **self._root_xattrs} if inode == pyfuse3.ROOT_INODE else xattrs


async def _within(seconds: float, work: Callable[[], None]) -> outcome.Outcome[None] | None:
    """Run ``work`` in a thread and wait up to ``seconds`` for it: its outcome, or None when
    it is still running (it then finishes on its own; nothing waits for it)."""
    token = trio.lowlevel.current_trio_token()
    done = trio.Event()
    finished: list[outcome.Outcome[None]] = []

    def deliver(result: outcome.Outcome[None]) -> None:
        finished.append(result)
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    trio.lowlevel.start_thread_soon(work, deliver)
    with trio.move_on_after(seconds):
        await done.wait()
    return finished[0] if finished else None


#: How long the end of serving waits for an entry invalidation in progress, in seconds.
NOTICE_WAIT = 1.0


class _EntryNotices:
    """Directory entries the kernel is told to forget, sent one after the other by a thread
    of their own: the kernel holds an invalidation until the requests on that directory are
    answered, so the event loop must not send them (pyfuse3's ``invalidate_entry_async``, which
    this replaces, goes on sending after the session is closed, each failure a traceback).
    Once :meth:`stop` is called, nothing more is sent and a failure is no news."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[tuple[int, bytes] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False

    def entry(self, parent: int, name: bytes) -> None:
        if self._stopped:
            return
        if self._thread is None:
            self._thread = threading.Thread(target=self._send, name="entry notices",
                                            daemon=True)
            self._thread.start()
        self._queue.put((parent, name))

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            self._queue.put(None)

    def wait(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _send(self) -> None:
        while (notice := self._queue.get()) is not None:
            if self._stopped:
                continue
            parent, name = notice
            try:
                pyfuse3.invalidate_entry(parent, name)
            except OSError as exc:
                if exc.errno != errno.ENOENT and not self._stopped:
                    log.warning("cannot invalidate entry %r of inode %d: %s", name, parent,
                                exc.strerror)


def _invalidate_directory(inode: int) -> None:
    """Drop the kernel's cached attributes of a directory and its cached listing (or of any
    inode whose node changed under the same number)."""
    try:
        pyfuse3.invalidate_inode(inode)
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot invalidate inode %d: %s", inode, exc.strerror)
