"""The merged view as plain data: inodes, directory listings and attributes, all prebuilt.

The FUSE layer (:mod:`hwcaps_fs.fuse.operations`) answers every request with a dictionary
lookup into a :class:`View`, so everything a request could ask is computed here, once per
(re)scan, from the scanned :class:`~hwcaps_fs.core.model.Store` and the resolutions. Nothing
here does I/O or knows about pyfuse3, so the whole shape of the mount is testable without
mounting.

Inode numbers are what makes long kernel caches safe. Each number stands for one *version*
of an entry: a file's number is keyed on the relative path, the candidate served and that
candidate's identity and change time, so it stays the same for as long as the served file is
unchanged and a new number appears the moment anything about it changes (a new variant, a
rename over, a chmod, a setcap). The kernel may keep attributes and page cache of an inode for a
day because an inode's content never changes; an update is a new inode plus the invalidation of
one directory entry (:func:`changed_entries`), and processes still holding the old inode keep
reading the old file.
"""

from __future__ import annotations

import enum
import os
import posixpath
import stat
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass

from hwcaps_fs.core.model import Candidate, DirInfo, Store
from hwcaps_fs.core.resolve import Resolution

#: The inode number of the view's root directory (FUSE's FUSE_ROOT_ID).
ROOT_INODE = 1

#: The extended attributes that tell which candidate an entry serves.
XATTR_LEVEL = b"user.hwcaps.level"
XATTR_SOURCE = b"user.hwcaps.source"

#: What ``user.hwcaps.level`` says for the baseline.
BASELINE = "baseline"

#: Mode bits that make an executable privileged: these only work from the real file.
PRIVILEGE_BITS = stat.S_ISUID | stat.S_ISGID


class Presentation(enum.Enum):
    """How regular files appear: as files with the served candidate's content (the default),
    or as symlinks to the served candidate."""

    FILES = "files"
    SYMLINKS = "symlinks"


@dataclass(frozen=True)
class Attributes:
    """What ``stat`` shows for an entry (the FUSE reply is built from this once)."""

    ino: int
    mode: int
    nlink: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int

    @property
    def blocks(self) -> int:
        """512-byte blocks, for ``du``: the size rounded up (the view has no holes)."""
        return (self.size + 511) // 512


@dataclass(frozen=True)
class Node:
    """One inode of the view.

    ``served`` is the candidate behind a file or symlink (None for directories);
    ``link_target`` is set for symlinks; ``xattrs`` are the extended attributes it answers.
    """

    attributes: Attributes
    relpath: str
    served: Candidate | None = None
    link_target: bytes | None = None
    xattrs: Mapping[bytes, bytes] | None = None

    @property
    def inode(self) -> int:
        return self.attributes.ino

    @property
    def is_directory(self) -> bool:
        return stat.S_ISDIR(self.attributes.mode)


@dataclass(frozen=True)
class View:
    """The whole view: ``nodes`` by inode, and for each directory inode its ``children``
    (name → inode) and its ``listing`` (the same, sorted, for readdir)."""

    nodes: Mapping[int, Node]
    children: Mapping[int, Mapping[bytes, int]]
    listing: Mapping[int, tuple[tuple[bytes, int], ...]]


class InodeNumbers:
    """Allocates inode numbers by key, remembering them from one view to the next.

    Numbers are never reused, so a number the kernel still holds can never come to mean
    another file. Keys that left the view are forgotten (:meth:`keep_only`) so the table
    tracks the store, not its history.
    """

    def __init__(self) -> None:
        self._numbers: dict[Hashable, int] = {_directory_key(""): ROOT_INODE}
        self._next = ROOT_INODE + 1

    def number(self, key: Hashable) -> int:
        number = self._numbers.get(key)
        if number is None:
            number = self._numbers[key] = self._next
            self._next += 1
        return number

    def keep_only(self, keys: Iterable[Hashable]) -> None:
        kept = set(keys)
        self._numbers = {key: n for key, n in self._numbers.items() if key in kept}


def _directory_key(relpath: str) -> Hashable:
    return ("dir", relpath)


def _file_key(relpath: str, candidate: Candidate, as_link: bool) -> Hashable:
    return ("link" if as_link else "file", relpath, candidate.source, candidate.dev,
            candidate.ino, candidate.ctime_ns, candidate.mtime_ns, candidate.size,
            candidate.mode)


def is_privileged(candidate: Candidate) -> bool:
    """Setuid, setgid or file capabilities: privileges only the real file can carry (a FUSE
    mount with auto_unmount is always nosuid, and nosuid also drops file capabilities)."""
    return bool(candidate.mode & PRIVILEGE_BITS) or candidate.capability is not None


def presents_as_link(candidate: Candidate, presentation: Presentation,
                     link_base: str | None) -> bool:
    """Whether ``candidate`` appears as a symlink: always with the symlinks presentation, and
    for privileged programs whenever there is somewhere to point at (``link_base``)."""
    if link_base is None:
        return False
    return presentation is Presentation.SYMLINKS or is_privileged(candidate)


def _directory_attributes(ino: int, info: DirInfo, subdirectories: int) -> Attributes:
    return Attributes(ino=ino, mode=info.reachable_mode, nlink=2 + subdirectories, uid=info.uid,
                      gid=info.gid, size=4096, atime_ns=info.atime_ns,
                      mtime_ns=info.mtime_ns, ctime_ns=info.ctime_ns)


def link_target(candidate: Candidate, presentation: Presentation,
                link_base: str | None) -> bytes | None:
    """What the entry for ``candidate`` points to, or None when it is a regular file: a
    baseline symlink stays the same symlink; otherwise see :func:`presents_as_link`."""
    if candidate.verbatim_link is not None:
        return os.fsencode(candidate.verbatim_link)
    if link_base is not None and presents_as_link(candidate, presentation, link_base):
        return os.fsencode(posixpath.join(link_base, candidate.source))
    return None


def _file_node(ino: int, relpath: str, candidate: Candidate, target: bytes | None) -> Node:
    xattrs = {XATTR_LEVEL: (candidate.level or BASELINE).encode(),
              XATTR_SOURCE: os.fsencode(candidate.source)}
    times = {"atime_ns": candidate.atime_ns, "mtime_ns": candidate.mtime_ns,
             "ctime_ns": candidate.ctime_ns}
    if target is None:
        attributes = Attributes(ino=ino, mode=candidate.reachable_mode, nlink=1, uid=candidate.uid,
                                gid=candidate.gid, size=candidate.size, **times)
        return Node(attributes, relpath, served=candidate, xattrs=xattrs)
    attributes = Attributes(ino=ino, mode=stat.S_IFLNK | 0o777, nlink=1, uid=candidate.uid,
                            gid=candidate.gid, size=len(target), **times)
    return Node(attributes, relpath, served=candidate, link_target=target, xattrs=xattrs)


def build_view(store: Store, resolutions: Iterable[Resolution], *,
               presentation: Presentation, link_base: str | None,
               numbers: InodeNumbers) -> View:
    """The view of ``store`` serving what ``resolutions`` chose.

    ``link_base`` is the directory symlinks point into (the candidate's ``source`` is appended):
    ROOT itself when the mount is elsewhere, a private bind mount of it for an in-place mount,
    None when no symlink can be offered (then everything is a regular file). Names without a
    served candidate, names whose directory is missing from the store, and files that collide
    with a directory of the same name are left out.
    """
    keys: list[Hashable] = []
    dir_inodes: dict[str, int] = {}
    for relpath in sorted(store.dirs):
        key = _directory_key(relpath)
        keys.append(key)
        dir_inodes[relpath] = numbers.number(key)

    nodes: dict[int, Node] = {}
    children: dict[int, dict[bytes, int]] = {ino: {} for ino in dir_inodes.values()}
    for relpath, ino in dir_inodes.items():
        parent = dir_inodes.get(posixpath.dirname(relpath)) if relpath else None
        if parent is not None:
            children[parent][os.fsencode(posixpath.basename(relpath))] = ino

    for resolution in resolutions:
        candidate, relpath = resolution.served, resolution.relpath
        parent = dir_inodes.get(posixpath.dirname(relpath))
        if candidate is None or parent is None or relpath in dir_inodes:
            continue
        target = link_target(candidate, presentation, link_base)
        key = _file_key(relpath, candidate, target is not None)
        keys.append(key)
        ino = numbers.number(key)
        nodes[ino] = _file_node(ino, relpath, candidate, target)
        children[parent][os.fsencode(posixpath.basename(relpath))] = ino

    for relpath, ino in dir_inodes.items():
        subdirectories = sum(1 for child in children[ino].values() if child in children)
        nodes[ino] = Node(_directory_attributes(ino, store.dirs[relpath], subdirectories),
                          relpath)
    numbers.keep_only(keys)
    listing = {ino: tuple(sorted(names.items())) for ino, names in children.items()}
    return View(nodes=nodes, children=children, listing=listing)


def changed_entries(old: View, new: View) -> list[tuple[int, bytes]]:
    """The ``(directory inode, name)`` pairs whose lookup answer differs between ``old`` and
    ``new``: the directory entries the kernel must forget (removed, replaced or added)."""
    changed: list[tuple[int, bytes]] = []
    for directory, old_names in old.children.items():
        new_names = new.children.get(directory, {})
        changed.extend((directory, name) for name, ino in old_names.items()
                       if new_names.get(name) != ino)
        changed.extend((directory, name) for name in new_names.keys() - old_names.keys())
    return changed


def changed_directories(old: View, new: View) -> list[int]:
    """Directory inodes in both views whose attributes (mtime, nlink, mode...) or listing
    changed: the kernel may cache both."""
    return [ino for ino, node in new.nodes.items()
            if node.is_directory and ino in old.nodes
            and (old.nodes[ino].attributes != node.attributes
                 or old.listing.get(ino) != new.listing.get(ino))]
