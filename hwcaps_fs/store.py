"""Variant stores: what is on disk under ROOT, gathered into candidates per relative path.

INTERFACE DRAFT — the types are fixed (other modules build on them); the scanning functions are
being implemented.

Two layouts are understood:

* ``glibc``: ``ROOT/<relpath>`` is the baseline, ``ROOT/glibc-hwcaps/<level>/<relpath>`` the
  variants (the layout glibc uses for libraries);
* ``loader``: ``ROOT/<level>/<relpath>`` with ``x86-64-v1`` as the baseline (hwcaps-loader's).

Scanning does all the I/O (``fstatat``, reading ELF headers and ``security.capability``) through
directory file descriptors opened from ROOT, never through paths that could cross a mount; the
result is plain data that :mod:`hwcaps_fs.resolve` decides on without touching the disk.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

from hwcaps_fs.elf import ElfFacts
from hwcaps_fs.levels import Architecture


class Layout(enum.Enum):
    GLIBC = "glibc"
    LOADER = "loader"


#: The directory that holds the variants in the glibc layout (hidden from the view).
GLIBC_HWCAPS_DIR = "glibc-hwcaps"


@dataclass(frozen=True)
class Candidate:
    """One file that could be served for a relative path.

    ``level`` is None for the baseline. ``source`` is the path, relative to ROOT, of the file
    that would actually be served (after following symlinks that stay inside ROOT); ``path`` is
    where the candidate was found. The stat fields are those of ``source``.
    ``problem`` is set when scanning already knows the candidate cannot be served (a symlink
    that escapes ROOT or loops, a FIFO, an unreadable or truncated file): resolution skips it
    with that message. ``elf`` is None for files that are not ELF (scripts).
    ``capability`` is the raw ``security.capability`` xattr, if any. ``untrusted_dir`` names
    the first directory between ROOT and the file that a non-root user could write, if any.
    """

    level: str | None
    path: str
    source: str
    mode: int
    uid: int
    gid: int
    size: int
    ino: int
    dev: int
    nlink: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    elf: ElfFacts | None = None
    capability: bytes | None = None
    untrusted_dir: str | None = None
    problem: str | None = None


@dataclass(frozen=True)
class DirInfo:
    """A directory of the merged view: its stat facts come from the baseline directory if there
    is one, else from the first variant directory found."""

    path: str
    mode: int
    uid: int
    gid: int
    ino: int
    dev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int


@dataclass
class Store:
    """A scanned store.

    ``files`` maps each relative path of the view (``bin/foo``, never starting with ``/``) to
    its candidates by level (None = baseline). ``dirs`` maps the relative path of every
    directory of the merged view (``""`` is ROOT itself) to its info. ``warnings`` are
    one-line messages about what was ignored (unknown level directories, unreadable ones...).
    """

    root: str
    layout: Layout
    architecture: Architecture
    files: dict[str, dict[str | None, Candidate]] = field(default_factory=dict)
    dirs: dict[str, DirInfo] = field(default_factory=dict)
    unknown_level_dirs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def candidates(self, relpath: str) -> Mapping[str | None, Candidate]:
        return self.files.get(relpath, {})
