"""The store as plain data: candidates per view path, the merged directories, the two layouts.

:mod:`hwcaps_fs.store.scan` fills a :class:`Store` from the disk; everything else
(resolution, the view, ``check``, ``which``) decides on it without touching the disk.

Two layouts are understood:

* ``glibc``: ``ROOT/<relpath>`` is the baseline, ``ROOT/glibc-hwcaps/<level>/<relpath>`` the
  variants (the layout glibc uses for libraries);
* ``loader``: ``ROOT/<level>/<relpath>`` with ``x86-64-v1`` as the baseline (hwcaps-loader's).

Each level (and the baseline) is a *tree*; the view is the recursive merge of the trees, so a
directory that exists only in one variant tree still appears. Names that are not valid UTF-8
are kept as :func:`os.fsdecode` gives them (surrogate escapes), so every string here can be
handed back to ``os`` functions unchanged.
"""

from __future__ import annotations

import enum
import operator
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Self

from hwcaps_fs.core.access import PERMISSION_BITS, DirAccess, restricted
from hwcaps_fs.core.elf import ElfFacts
from hwcaps_fs.core.levels import Architecture


class Layout(enum.Enum):
    GLIBC = "glibc"
    LOADER = "loader"


#: The directory that holds the variants in the glibc layout (hidden from the view).
GLIBC_HWCAPS_DIR = "glibc-hwcaps"


#: The one int object kept for each value of the stat fields that files share (mode, owner,
#: device, permission bits): without it a store of 100,000 names holds 100,000 equal copies
#: of each, 32 bytes apiece. As many entries as distinct values, which are few.
_SHARED: dict[int, int] = {}


def shared(value: int) -> int:
    """``value`` as the one int object kept for it (see :data:`_SHARED`)."""
    return _SHARED.setdefault(value, value)


@dataclass(frozen=True, kw_only=True, slots=True)
class StatRecord:
    """The stat facts a view shows for a file or directory (those of ``os.stat_result``, without
    the ``st_`` prefix). ``reachable_bits`` are the permission bits left once the directories to
    be searched on the way are taken into account (:mod:`hwcaps_fs.core.access`)."""

    mode: int
    uid: int
    gid: int
    size: int
    nlink: int
    ino: int
    dev: int
    atime_ns: int = field(compare=False)  # reading a file changes it; nothing else does
    mtime_ns: int
    ctime_ns: int
    reachable_bits: int = PERMISSION_BITS

    @classmethod
    def from_stat(cls, st: os.stat_result, **fields: Any) -> Self:
        """The record of ``st``, with the other ``fields`` of the subclass."""
        return cls(mode=shared(st.st_mode), uid=shared(st.st_uid), gid=shared(st.st_gid),
                   size=st.st_size, nlink=st.st_nlink, ino=st.st_ino, dev=shared(st.st_dev),
                   atime_ns=st.st_atime_ns,
                   mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, **fields)

    @property
    def reachable_mode(self) -> int:
        """``mode`` without the permissions the directories above deny (what a view shows)."""
        return shared(restricted(self.mode, self.reachable_bits))

    def __reduce__(self) -> tuple[Callable[..., StatRecord], tuple[Any, ...]]:
        """Pickled as its values in field order: a store's records cross a pipe as the daemon
        starts (:mod:`hwcaps_fs.fuse.first_scan`), and the dataclass' own pickling (a dict of
        fields, set one by one in Python) took twice as long to load."""
        return _record, (type(self), _fields_of(type(self)).values(self))


#: The fields whose values :func:`shared` keeps once: a loaded record shares them again.
_SHARED_FIELDS = frozenset({"mode", "uid", "gid", "dev", "reachable_bits"})


@dataclass(frozen=True)
class _Fields:
    """A record class' fields in order: how to read them all at once, how to set each on a
    new record (its slot, which a frozen class' ``__setattr__`` does not offer), and which to
    share."""

    values: Callable[[Any], tuple[Any, ...]]
    setters: tuple[Callable[[Any, Any], None], ...]
    shared: tuple[int, ...]


_FIELDS: dict[type[StatRecord], _Fields] = {}


def _fields_of(cls: type[StatRecord]) -> _Fields:
    known = _FIELDS.get(cls)
    if known is None:
        names = tuple(item.name for item in fields(cls))
        known = _FIELDS[cls] = _Fields(
            operator.attrgetter(*names), tuple(getattr(cls, name).__set__ for name in names),
            tuple(index for index, name in enumerate(names) if name in _SHARED_FIELDS))
    return known


def _record(cls: type[StatRecord], values: tuple[Any, ...]) -> StatRecord:
    """The record of class ``cls`` with ``values`` in field order (unpickling: no checks, as
    the records were made by the same program)."""
    known = _fields_of(cls)
    record, settled = object.__new__(cls), list(values)
    for index in known.shared:
        settled[index] = shared(settled[index])
    for setter, value in zip(known.setters, settled, strict=True):
        setter(record, value)
    return record


@dataclass(frozen=True, kw_only=True, slots=True)
class Candidate(StatRecord):
    """One file that could be served for a relative path.

    ``level`` is None for the baseline. ``source`` is the path, relative to ROOT, of the file
    that would actually be served (after following symlinks that stay inside ROOT); ``path`` is
    where the candidate was found. The stat fields are those of ``source``.
    ``problem`` is set when scanning already knows the candidate cannot be served (a symlink
    that escapes ROOT or loops, a FIFO, an unreadable or truncated file): resolution skips it
    with that message. ``elf`` is None for files that are not ELF (scripts).
    ``capability`` is the raw ``security.capability`` xattr, if any. ``untrusted`` says what a
    non-root user could replace on the way to the file, if anything: a directory above ROOT,
    ROOT (``"."``), a directory below it, a symlink followed or a directory one sits in.
    ``link_target`` is what ``path`` points to when it is a symlink (``readlink``), so that a
    view can still present a symlink that leaves ROOT as a symlink.
    """

    level: str | None
    path: str
    source: str
    elf: ElfFacts | None = None
    capability: bytes | None = None
    untrusted: str | None = None
    problem: str | None = None
    link_target: str | None = None

    @property
    def unfollowed_link(self) -> bool:
        """A symlink scanning did not follow (it leaves ROOT, dangles or loops): the stat
        fields are the link's own, and a view can only show it as the same symlink
        (``/usr/bin/awk -> /etc/alternatives/awk`` must stay what it is)."""
        return stat.S_ISLNK(self.mode)

    @property
    def verbatim_link(self) -> str | None:
        """The target of a baseline that is a symlink: views show it as that same symlink, as
        the plain directory does. Then ``python3 -> python3.11`` runs python3.11's best
        variant through the view, and ``awk -> /etc/alternatives/awk`` stays what it is."""
        return self.link_target if self.level is None else None


#: A store's names: the candidates of each view path, by level (None = the baseline).
Files = dict[str, dict[str | None, Candidate]]


@dataclass(frozen=True, kw_only=True, slots=True)
class DirInfo(StatRecord):
    """A directory of the merged view: its stat facts come from the baseline directory if there
    is one, else from the first variant directory found."""

    path: str


@dataclass
class Store:
    """A scanned store.

    ``files`` maps each relative path of the view (``bin/foo``, never starting with ``/``) to
    its candidates by level (None = baseline). ``dirs`` maps the relative path of every
    directory of the merged view (``""`` is ROOT itself) to its info. ``warnings`` are
    one-line messages about what was ignored (unknown level directories, unreadable ones...).
    ``root_parents`` are the directories above ROOT (``/`` first): searching them is part of
    reaching any file of the store, so they count in ``reachable_bits``. Without
    ``read_baselines`` baselines are not opened and have no ``elf`` facts: serving one needs
    none, and a store is mostly baselines (reading them is most of a scan's cost).
    """

    root: str
    layout: Layout
    architecture: Architecture
    files: Files = field(default_factory=dict)
    dirs: dict[str, DirInfo] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    root_parents: tuple[DirAccess, ...] = ()
    read_baselines: bool = True

    def candidates(self, relpath: str) -> Mapping[str | None, Candidate]:
        return self.files.get(relpath, {})


def tree_roots(layout: Layout, architecture: Architecture) -> dict[str | None, str]:
    """The ROOT-relative directory of each tree, by level (None = baseline), baseline first
    and then the levels in ascending order (the order that decides :class:`DirInfo`)."""
    roots: dict[str | None, str] = {}
    if layout is Layout.GLIBC:
        roots[None] = ""
        roots.update((name, f"{GLIBC_HWCAPS_DIR}/{name}") for name in architecture.level_names)
        return roots
    if architecture.baseline_dir:
        roots[None] = architecture.baseline_dir
    roots.update((name, name) for name in architecture.level_names)
    return roots


def locate(store: Store, path: str) -> tuple[str | None, str] | None:
    """Which tree a ROOT-relative ``path`` belongs to: ``(level, view relpath)``, or None when
    it is outside every tree (``glibc-hwcaps`` itself, an unknown level directory...).

    This is what a watcher needs to turn a change on disk into the view path to rescan.
    """
    roots = tree_roots(store.layout, store.architecture)
    for level, top in roots.items():
        if top and (path == top or path.startswith(top + "/")):
            return level, path[len(top) + 1 :]
    if store.layout is Layout.LOADER or path.split("/", 1)[0] == GLIBC_HWCAPS_DIR:
        return None
    return None, path
