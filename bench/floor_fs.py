"""The least a stock pyfuse3 filesystem can do per exec: one file, no checks, no view.

bench/run.py mounts it next to hwcaps-fs so that the exec figures show how far hwcaps-fs is from
the floor of its stack on the same machine in the same run (research: fuse-floor.md).

    python bench/floor_fs.py FILE MOUNTPOINT      (serves FILE as MOUNTPOINT/prog until SIGTERM)
"""

from __future__ import annotations

import errno
import os
import stat
import sys

import pyfuse3
import trio

INODE = 2
CACHE = 86400.0


class FloorFs(pyfuse3.Operations):
    def __init__(self, path: str) -> None:
        super().__init__()
        self.fd = os.open(path, os.O_RDONLY)
        st = os.fstat(self.fd)
        root = self._entry(pyfuse3.ROOT_INODE, stat.S_IFDIR | 0o755, 0)
        self.entries = {pyfuse3.ROOT_INODE: root, INODE: self._entry(INODE, st.st_mode, st.st_size)}
        self.info = pyfuse3.FileInfo(fh=INODE, keep_cache=True)

    @staticmethod
    def _entry(ino: int, mode: int, size: int) -> pyfuse3.EntryAttributes:
        entry = pyfuse3.EntryAttributes()
        entry.st_ino, entry.st_mode, entry.st_size = ino, mode, size
        entry.entry_timeout = entry.attr_timeout = CACHE
        return entry

    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name != b"prog":
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self.entries[INODE]

    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self.entries[inode]

    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        return self.info

    async def read(self, fh: int, off: int, size: int) -> bytes:
        return os.pread(self.fd, size, off)

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)

    async def release(self, fh: int) -> None:
        return None

    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        raise pyfuse3.FUSEError(errno.ENOSYS)


def main() -> None:
    path, mountpoint = sys.argv[1:3]
    options = {"fsname=floor", "ro", "nosuid", "nodev", "allow_other", "default_permissions"}
    pyfuse3.init(FloorFs(path), mountpoint, options)
    try:
        trio.run(pyfuse3.main)
    finally:
        pyfuse3.close(unmount=True)


if __name__ == "__main__":
    main()
