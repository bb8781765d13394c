"""A slow store for fault tests: a stock pyfuse3 passthrough whose open or read of one file can
be held until the test lets it go.

    python -m tests.slow_fs SOURCE MOUNTPOINT CONTROL NAME

serves the directory SOURCE at MOUNTPOINT (until SIGTERM) with every cache off, so that each
open and read of the files below reaches this process. While the file ``CONTROL/hold`` says
``open`` or ``read``, that operation on any file called NAME waits: it creates ``CONTROL/held``
(so the test knows a request is stuck here) and answers only once ``CONTROL/release`` exists
(or SIGTERM came).
Held requests wait in their own trio task, so every other request is answered as usual, which
is what a store on a stalled network file system looks like to hwcaps-fs.

It implements what the tests need of a store, no more: lookups, attributes, directory listings,
extended attributes, and reading, creating and writing files. Changes must go through this
mount to be seen by inotify, hence the writes. Inode numbers are its own, one per path.
"""

from __future__ import annotations

import errno
import itertools
import os
import signal
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pyfuse3
import trio

#: The file of CONTROL that arms the hold; it holds the operation to stall: ``open``/``read``.
HOLD = "hold"
#: Created in CONTROL when a request is being held.
HELD = "held"
#: Created in CONTROL by the test to let held requests (and later ones) through.
RELEASE = "release"


_Result = TypeVar("_Result")


def _os(call: Callable[[], _Result]) -> _Result:
    """``call()``, with an OSError answered to the kernel as its errno."""
    try:
        return call()
    except OSError as exc:
        raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None


def _entry(inode: int, st: os.stat_result) -> pyfuse3.EntryAttributes:
    entry = pyfuse3.EntryAttributes()
    entry.st_ino = inode
    entry.entry_timeout = entry.attr_timeout = 0
    for field in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_blocks",
                  "st_atime_ns", "st_mtime_ns", "st_ctime_ns"):
        setattr(entry, field, getattr(st, field))
    entry.st_blksize = 4096
    return entry


class SlowFs(pyfuse3.Operations):
    """``source`` passed through; see the module docstring for the hold."""

    def __init__(self, source: str, control: Path, name: str) -> None:
        super().__init__()
        self._paths = {pyfuse3.ROOT_INODE: source}
        self._inodes = {source: pyfuse3.ROOT_INODE}
        self._numbers = itertools.count(pyfuse3.ROOT_INODE + 1)
        self._files: dict[int, str] = {}
        self._control = control
        self._name = name
        self.stopping = False

    def _inode(self, path: str) -> int:
        if path not in self._inodes:
            inode = next(self._numbers)
            self._inodes[path], self._paths[inode] = inode, path
        return self._inodes[path]

    def _child(self, parent_inode: int, name: bytes) -> str:
        return os.path.join(self._paths[parent_inode], os.fsdecode(name))

    def _stat(self, path: str) -> pyfuse3.EntryAttributes:
        return _entry(self._inode(path), _os(lambda: os.lstat(path)))

    async def _hold(self, operation: str, path: str) -> None:
        if os.path.basename(path) != self._name:
            return
        try:
            armed = (self._control / HOLD).read_text().strip()
        except FileNotFoundError:
            return
        if armed != operation:
            return
        (self._control / HELD).touch()
        while not (self.stopping or (self._control / RELEASE).exists()):
            await trio.sleep(0.01)

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._stat(self._child(parent_inode, name))

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._stat(self._paths[inode])

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self._paths[inode]
        if fields.update_mode:
            _os(lambda: os.chmod(path, stat.S_IMODE(attr.st_mode)))
        if fields.update_size:
            _os(lambda: os.truncate(path, attr.st_size))
        if fields.update_atime or fields.update_mtime:
            _os(lambda: os.utime(path, ns=(attr.st_atime_ns, attr.st_mtime_ns)))
        return self._stat(path)

    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        directory = self._paths[fh]
        names = sorted(_os(lambda: os.listdir(directory)))
        for index in range(start_id, len(names)):
            path = os.path.join(directory, names[index])
            if not pyfuse3.readdir_reply(token, os.fsencode(names[index]), self._stat(path),
                                         index + 1):
                break

    async def open(self, inode: int, flags: int,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self._paths[inode]
        await self._hold("open", path)
        fd = _os(lambda: os.open(path, flags))
        self._files[fd] = path
        return pyfuse3.FileInfo(fh=fd, direct_io=True)

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self._child(parent_inode, name)
        fd = _os(lambda: os.open(path, flags | os.O_CREAT, stat.S_IMODE(mode)))
        self._files[fd] = path
        return pyfuse3.FileInfo(fh=fd, direct_io=True), self._stat(path)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        await self._hold("read", self._files[fh])
        return _os(lambda: os.pread(fh, size, off))

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return _os(lambda: os.pwrite(fh, buf, off))

    async def flush(self, fh: int) -> None:
        return None

    async def release(self, fh: int) -> None:
        del self._files[fh]
        os.close(fh)

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        path = self._paths[inode]
        return _os(lambda: os.getxattr(path, name, follow_symlinks=False))


async def _serve(ops: SlowFs) -> None:
    """Serve until SIGTERM, which also lets held requests go (pyfuse3's main loop waits for
    the requests in progress)."""
    async with trio.open_nursery() as nursery:

        async def stop_on_sigterm() -> None:
            with trio.open_signal_receiver(signal.SIGTERM) as signals:
                async for _ in signals:
                    ops.stopping = True
                    pyfuse3.terminate()
                    return

        nursery.start_soon(stop_on_sigterm)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def main() -> None:
    source, mountpoint, control, name = sys.argv[1:5]
    ops = SlowFs(source, Path(control), name)
    pyfuse3.init(ops, mountpoint, {"fsname=slow-fs", "subtype=slow-fs", "default_permissions"})
    try:
        trio.run(_serve, ops)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
