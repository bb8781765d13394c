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
from collections.abc import Collection, Hashable, Iterable, Mapping, Sequence
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

#: The mode of every symlink of the view.
LINK_MODE = stat.S_IFLNK | 0o777


class Presentation(enum.Enum):
    """How regular files appear: as files with the served candidate's content (the default),
    or as symlinks to the served candidate."""

    FILES = "files"
    SYMLINKS = "symlinks"


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Node:
    """One inode of the view.

    ``served`` is the candidate behind a file or symlink (None for directories);
    ``link_target`` is set for symlinks.
    """

    attributes: Attributes
    relpath: str
    served: Candidate | None = None
    link_target: bytes | None = None

    @property
    def xattrs(self) -> Mapping[bytes, bytes]:
        """The extended attributes it answers: which candidate it serves (made when asked,
        not kept: a view holds one node per name of the store)."""
        if self.served is None:
            return {}
        return {XATTR_LEVEL: (self.served.level or BASELINE).encode(),
                XATTR_SOURCE: os.fsencode(self.served.source)}

    @property
    def inode(self) -> int:
        return self.attributes.ino

    @property
    def is_directory(self) -> bool:
        return stat.S_ISDIR(self.attributes.mode)


@dataclass(frozen=True)
class View:
    """The whole view: ``nodes`` by inode, for each directory inode its ``children``
    (name → inode) and its ``listing`` (the same, sorted, for readdir), and the inode of each
    directory by relative path (``directories``)."""

    nodes: Mapping[int, Node]
    children: Mapping[int, Mapping[bytes, int]]
    listing: Mapping[int, tuple[tuple[bytes, int], ...]]
    directories: Mapping[str, int]


@dataclass(frozen=True)
class Update:
    """A new view and what changed from the previous one: inodes ``added`` and ``removed``,
    inodes whose node or listing ``changed`` under the same number (a directory's attributes,
    its names: the kernel may cache both), and the directory ``entries`` whose lookup answer
    changed (what the kernel must forget)."""

    view: View
    added: Sequence[int]
    removed: Sequence[int]
    changed: Sequence[int]
    entries: Sequence[tuple[int, bytes]]


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
        number = self._numbers.setdefault(key, self._next)  # one hash of the key, not two
        if number == self._next:
            self._next += 1
        return number

    def keep_only(self, keys: Collection[Hashable]) -> None:
        """Forget every key but ``keys``: distinct keys, each numbered since the last call
        (so when there are as many as numbers, all are kept: a first view costs nothing)."""
        if len(keys) == len(self._numbers):
            return
        kept = set(keys)
        self._numbers = {key: n for key, n in self._numbers.items() if key in kept}

    def forget(self, key: Hashable) -> None:
        self._numbers.pop(key, None)

    def __len__(self) -> int:
        return len(self._numbers)


def _directory_key(relpath: str) -> Hashable:
    return ("dir", relpath)


def _file_key(relpath: str, candidate: Candidate, as_link: bool) -> Hashable:
    """A file's version: its view path, everything scanned about the candidate served (its
    access time aside) and how it is presented."""
    return relpath, as_link, candidate


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
    mode, size = ((candidate.reachable_mode, candidate.size) if target is None
                  else (LINK_MODE, len(target)))
    attributes = Attributes(ino=ino, mode=mode, nlink=1, uid=candidate.uid, gid=candidate.gid,
                            size=size, atime_ns=candidate.atime_ns,
                            mtime_ns=candidate.mtime_ns, ctime_ns=candidate.ctime_ns)
    return Node(attributes, relpath, served=candidate, link_target=target)


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
        directory, _, name = resolution.relpath.rpartition("/")  # a view path: no "/" at its end
        parent = dir_inodes.get(directory)
        if parent is None or resolution.relpath in dir_inodes:
            continue
        node = _served_node(resolution, presentation, link_base, numbers)
        if node is not None:
            keys.append(_node_key(node))
            nodes[node.inode] = node
            children[parent][os.fsencode(name)] = node.inode

    for relpath, ino in dir_inodes.items():
        subdirectories = sum(1 for child in children[ino].values() if child in children)
        nodes[ino] = Node(_directory_attributes(ino, store.dirs[relpath], subdirectories),
                          relpath)
    numbers.keep_only(keys)
    listing = {ino: tuple(sorted(names.items())) for ino, names in children.items()}
    return View(nodes=nodes, children=children, listing=listing, directories=dir_inodes)


def _name(relpath: str) -> bytes:
    return os.fsencode(posixpath.basename(relpath))


def _node_key(node: Node) -> Hashable:
    assert node.served is not None
    return _file_key(node.relpath, node.served, node.link_target is not None)


def _served_node(resolution: Resolution, presentation: Presentation, link_base: str | None,
                 numbers: InodeNumbers) -> Node | None:
    """The node of a file path, numbered (None when nothing is served there)."""
    candidate = resolution.served
    if candidate is None:
        return None
    target = link_target(candidate, presentation, link_base)
    ino = numbers.number(_file_key(resolution.relpath, candidate, target is not None))
    return _file_node(ino, resolution.relpath, candidate, target)


def patch_view(view: View, resolutions: Iterable[Resolution], *,
               presentation: Presentation, link_base: str | None,
               numbers: InodeNumbers, dirs: Mapping[str, DirInfo] | None = None) -> Update:
    """``view`` with the file paths of ``resolutions`` (and only those) brought up to date:
    what an update that touched a few names costs, whatever the size of the store. With
    ``dirs`` (the store's directories now), the directories are brought up to date first:
    those that left go with everything below them, those that appeared come empty (their
    files must be among ``resolutions``), and each one's attributes follow its
    :class:`~hwcaps_fs.core.model.DirInfo`; without, they must be those of ``view``. Gives
    what :func:`build_view` and :func:`diff` would, at the cost of the directories and the
    names touched."""
    patch = _Patch(view, numbers)
    directories = view.directories if dirs is None else patch.directories(dirs)
    for resolution in resolutions:
        parent = directories.get(posixpath.dirname(resolution.relpath))
        if parent is None or resolution.relpath in directories:
            continue
        name = _name(resolution.relpath)
        old = patch.children[parent].get(name)
        node = _served_node(resolution, presentation, link_base, numbers)
        if (None if node is None else node.inode) == old:
            continue
        if old is not None:
            patch.remove(parent, name)
        if node is not None:
            patch.add(parent, name, node)
    return patch.update(directories)


class _Patch:
    """The working copy of a view that :func:`patch_view` changes: dictionaries copied when
    first changed, and what changed so far."""

    def __init__(self, view: View, numbers: InodeNumbers) -> None:
        self.view = view
        self.numbers = numbers
        self.nodes = dict(view.nodes)
        self.children = dict(view.children)
        self.copied: dict[int, dict[bytes, int]] = {}
        self.added: list[int] = []
        self.removed: list[int] = []
        self.changed: list[int] = []
        self.entries: list[tuple[int, bytes]] = []

    def names(self, parent: int) -> dict[bytes, int]:
        """The names of directory ``parent``, copied to be changed."""
        names = self.copied.get(parent)
        if names is None:
            names = self.copied[parent] = dict(self.children[parent])
            self.children[parent] = names
        return names

    def add(self, parent: int, name: bytes, node: Node) -> None:
        self.nodes[node.inode] = node
        self.names(parent)[name] = node.inode
        self.added.append(node.inode)
        self.entries.append((parent, name))

    def remove(self, parent: int, name: bytes) -> None:
        self._drop(self.names(parent).pop(name))
        self.entries.append((parent, name))

    def _drop(self, inode: int) -> None:
        """Forget ``inode``, and everything below it if it is a directory."""
        node = self.nodes.pop(inode)
        self.removed.append(inode)
        if node.served is not None:
            self.numbers.forget(_node_key(node))
            return
        self.numbers.forget(_directory_key(node.relpath))
        self.copied.pop(inode, None)
        for child in self.children.pop(inode).values():
            self._drop(child)

    def directories(self, dirs: Mapping[str, DirInfo]) -> dict[str, int]:
        """Bring the directories to ``dirs``; their inodes by relative path."""
        old = self.view.directories
        for relpath in sorted(old.keys() - dirs.keys()):  # a parent before what is below it
            if relpath and old[relpath] in self.nodes:
                self.remove(old[posixpath.dirname(relpath)], _name(relpath))
        inodes = {relpath: self.numbers.number(_directory_key(relpath)) for relpath in dirs}
        fresh = set()
        for relpath in sorted(dirs.keys() - old.keys()):
            parent = inodes.get(posixpath.dirname(relpath)) if relpath else None
            if parent is None or parent not in self.children:
                continue
            name = _name(relpath)
            if name in self.children[parent]:
                self.remove(parent, name)  # a file that was there
            inode = inodes[relpath]
            self.children[inode] = self.copied[inode] = {}
            fresh.add(inode)
            self.add(parent, name, Node(_directory_attributes(inode, dirs[relpath], 0),
                                        relpath))
        for relpath, inode in inodes.items():
            if inode not in self.children:
                continue  # below a directory that could not be added
            names = self.copied.get(inode)
            subdirectories = (self.nodes[inode].attributes.nlink - 2 if names is None
                              else sum(1 for child in names.values() if child in self.children))
            node = Node(_directory_attributes(inode, dirs[relpath], subdirectories), relpath)
            if node != self.nodes[inode]:
                self.nodes[inode] = node
                if inode not in fresh:
                    self.changed.append(inode)
        return {relpath: inode for relpath, inode in inodes.items() if inode in self.children}

    def update(self, directories: Mapping[str, int]) -> Update:
        listing = {ino: names for ino, names in self.view.listing.items()
                   if ino in self.children}
        listing.update((ino, tuple(sorted(names.items()))) for ino, names in self.copied.items())
        added = set(self.added)
        changed = [*self.changed, *(ino for ino in self.copied
                                    if ino not in added and ino not in self.changed)]
        view = View(self.nodes, self.children, listing, directories)
        entries = [entry for entry in dict.fromkeys(self.entries) if entry[0] not in added]
        return Update(view, self.added, self.removed, changed, entries)


def diff(old: View, new: View) -> Update:
    """What changed from ``old`` to ``new`` (both whole views: costs the size of the store)."""
    return Update(
        new,
        added=[ino for ino in new.nodes if ino not in old.nodes],
        removed=[ino for ino in old.nodes if ino not in new.nodes],
        changed=[ino for ino, node in new.nodes.items()
                 if ino in old.nodes and (old.nodes[ino] != node
                                          or old.listing.get(ino) != new.listing.get(ino))],
        entries=changed_entries(old, new),
    )


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
