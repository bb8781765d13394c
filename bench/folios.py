"""How a file's bytes sit in the page cache: order-0 pages or large folios.

The cost of exec'ing a static binary depends on it (docs/fast-path.md, "Static binaries"):
mapping and unmapping the binary's pages is work per folio, and a FUSE file on Linux 6.18 has
order-0 pages only.

    python bench/folios.py FILE...      (as root: /proc/kpageflags)

Maps each FILE read-only, touches every page (which fills the page cache by faults, as an
exec does, where it was not cached), and counts the pages by the folio they belong to, from
/proc/self/pagemap and /proc/kpageflags.
"""

from __future__ import annotations

import mmap
import os
import struct
import sys
from dataclasses import dataclass
from typing import BinaryIO

PAGE = mmap.PAGESIZE
PRESENT = 1 << 63
PFN_MASK = (1 << 55) - 1
#: /proc/kpageflags bits (Documentation/admin-guide/mm/pagemap.rst)
COMPOUND_HEAD = 1 << 15
COMPOUND_TAIL = 1 << 16


@dataclass
class Folios:
    pages: int = 0
    order0: int = 0
    large_folios: int = 0
    pages_in_large: int = 0

    def __str__(self) -> str:
        return (f"{self.pages} pages: {self.order0} order-0, {self.pages_in_large} in "
                f"{self.large_folios} large folios")


def u64(f: BinaryIO, index: int) -> int:
    """The ``index``-th 64-bit entry of a /proc table."""
    f.seek(index * 8)
    value: int = struct.unpack("Q", f.read(8))[0]
    return value


def folios(path: str) -> Folios:
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        mapped = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    # Unbuffered: a buffer would keep entries read before their page was faulted in.
    with mapped, open("/proc/self/pagemap", "rb", buffering=0) as pagemap, \
            open("/proc/kpageflags", "rb", buffering=0) as kpageflags:
        view = memoryview(mapped)
        st = os.stat(path)
        start = mapping_start(st.st_dev, st.st_ino)
        counts = Folios()
        for index in range(0, size, PAGE):
            _ = view[index]  # fault the page in
            entry = u64(pagemap, start // PAGE + index // PAGE)
            if not entry & PRESENT:
                continue
            flags = u64(kpageflags, entry & PFN_MASK)
            counts.pages += 1
            if flags & COMPOUND_HEAD:
                counts.large_folios += 1
                counts.pages_in_large += 1
            elif flags & COMPOUND_TAIL:
                counts.pages_in_large += 1
            else:
                counts.order0 += 1
        view.release()
    return counts


def mapping_start(dev: int, ino: int) -> int:
    """The start of this process's mapping of the file (dev, ino) at offset 0."""
    with open("/proc/self/maps") as maps:
        lines = maps.readlines()
    for line in lines:
        fields = line.split()
        major, minor = (int(part, 16) for part in fields[3].split(":"))
        if (int(fields[2], 16) == 0 and int(fields[4]) == ino
                and os.makedev(major, minor) == dev):
            return int(fields[0].split("-")[0], 16)
    raise LookupError("mapping not found")


def main() -> int:
    for path in sys.argv[1:]:
        print(f"{path}: {folios(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
