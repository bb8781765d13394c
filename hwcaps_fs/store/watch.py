"""Following the store while it is mounted: inotify on every directory under ROOT.

Package managers replace a program by writing a new file and renaming it over the old one, in
the baseline tree or in any level's tree; a new level directory can appear, a subtree can be
removed. Every directory under ROOT is watched (the variant trees included), each change is
mapped back to the view path it affects, and only those paths are rescanned
(:func:`apply_changes`); the daemon then brings the view up to date and invalidates what
changed.

Watches are added through ``/proc/self/fd/N`` of directory fds walked from the ROOT fd, never
through a path: ROOT may be the mountpoint, and a path lookup through our own mount from the
daemon would deadlock. The event decoding is pure (:func:`decode_events`); the inotify calls go
through :mod:`hwcaps_fs.system.libc` because the standard library has no binding.
"""

from __future__ import annotations

import os
import posixpath
import struct
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import trio

from hwcaps_fs.core.model import Candidate, Layout, Store, locate
from hwcaps_fs.store.fds import open_dir_beneath
from hwcaps_fs.store.scan import MAX_DEPTH, rescan_dir, rescan_path
from hwcaps_fs.system.libc import check, libc

IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_ISDIR = 0x40000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

#: What changes the view: entries appearing, disappearing, replaced, rewritten or re-moded
#: (chmod, chown, setcap change IN_ATTRIB). IN_MODIFY is left out: the close that ends a
#: write reports the same change once instead of once per write. No IN_DONT_FOLLOW: watches
#: are added through the /proc/self/fd magic link, which must be followed.
WATCH_MASK = (IN_ATTRIB | IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_CREATE | IN_DELETE
              | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR)

#: How many path components below ROOT directories are watched: as deep as the scan merges
#: them (:data:`~hwcaps_fs.store.scan.MAX_DEPTH`) in a tree whose top is two components down
#: (``glibc-hwcaps/<level>``).
MAX_WATCH_DEPTH = MAX_DEPTH + 2

#: Events that concern the watched directory itself rather than an entry in it.
SELF_EVENTS = IN_DELETE_SELF | IN_MOVE_SELF

#: ``struct inotify_event`` without its name: wd, mask, cookie, len.
EVENT_HEADER = struct.Struct("=iIII")

@dataclass(frozen=True)
class Event:
    """One inotify event: ``name`` is the entry in the watched directory ("" for the
    directory itself)."""

    wd: int
    mask: int
    cookie: int
    name: str


@dataclass(frozen=True)
class Change:
    """A ROOT-relative ``path`` whose entry changed; ``is_dir`` when it is (or was) a directory."""

    path: str
    is_dir: bool


@dataclass(frozen=True)
class Changes:
    """The changes of one batch of events; ``overflow`` when the kernel dropped events (then
    only a full rescan is safe); ``root_moved`` when ROOT itself was renamed or removed."""

    changes: frozenset[Change]
    overflow: bool = False
    root_moved: bool = False


def merged(batches: Sequence[Changes]) -> Changes:
    """The changes of ``batches`` as one batch (of the events of all of them)."""
    return Changes(frozenset().union(*(batch.changes for batch in batches)),
                   any(batch.overflow for batch in batches),
                   any(batch.root_moved for batch in batches))


def decode_events(data: bytes) -> list[Event]:
    """The events packed in one ``read`` of an inotify fd."""
    events = []
    offset = 0
    while offset + EVENT_HEADER.size <= len(data):
        wd, mask, cookie, length = EVENT_HEADER.unpack_from(data, offset)
        offset += EVENT_HEADER.size
        raw = data[offset:offset + length].split(b"\0", 1)[0]
        offset += length
        events.append(Event(wd, mask, cookie, os.fsdecode(raw)))
    return events


def changes_of(events: Iterable[Event], directories: Mapping[int, str]) -> Changes:
    """What ``events`` changed, as ROOT-relative paths, given the directory each watch
    descriptor watches. Events of unknown descriptors (already removed) are dropped."""
    found: set[Change] = set()
    overflow = root_moved = False
    for event in events:
        if event.mask & IN_Q_OVERFLOW:
            overflow = True
            continue
        directory = directories.get(event.wd)
        if directory is None or event.mask & IN_IGNORED:
            continue
        if event.mask & SELF_EVENTS or not event.name:
            found.add(Change(directory, True))
            root_moved |= not directory and bool(event.mask & SELF_EVENTS)
        else:
            path = f"{directory}/{event.name}" if directory else event.name
            found.add(Change(path, bool(event.mask & IN_ISDIR)))
    return Changes(frozenset(found), overflow, root_moved)


@dataclass
class Rescanned:
    """What :func:`apply_changes` rescanned: the view file ``paths`` whose candidates may
    have changed, whether ``directories`` may have changed too, or ``everything`` (the view
    must then be rebuilt whole); ``warnings`` of the rescans."""

    paths: set[str] = field(default_factory=set)
    directories: bool = False
    everything: bool = False
    warnings: list[str] = field(default_factory=list)


def apply_changes(store: Store, root_fd: int, changes: Changes,
                  links: Iterable[str]) -> Rescanned:
    """Rescan in ``store`` what ``changes`` touched, and the names in ``links`` (see
    :func:`has_variant_link`).

    A level directory appearing or leaving (or ``glibc-hwcaps`` itself) or a lost event
    rescans everything; a change inside a directory that is no tree of the store (an unknown
    level) is ignored, as the scan ignores that directory; a directory rescans its subtree; a
    file only its name. Names with a variant that is a symlink are rescanned on every change:
    no event reaches a link's directory when what it points to (or a link along the way) is
    replaced, removed or created, and variant links are few.
    """
    located = []
    for change in changes.changes:
        where = locate(store, change.path)
        if where is None and _inside_foreign(store, change.path):
            continue
        located.append((change, where))
    if changes.overflow or any(where is None or not where[1] for _, where in located):
        return Rescanned(set(store.files), everything=True,
                         warnings=rescan_dir(store, root_fd, ""))
    done = Rescanned()
    directories = {where[1] for change, where in located if where and change.is_dir}
    for directory in sorted(directories):
        prefix = f"{directory}/"
        if not any(directory.startswith(f"{other}/") for other in directories):
            done.paths.update(path for path in store.files if path.startswith(prefix))
            done.warnings += rescan_dir(store, root_fd, directory)
            done.paths.update(path for path in store.files if path.startswith(prefix))
            done.directories = True
    files = {where[1] for change, where in located
             if where and not change.is_dir and not _below(where[1], directories)}
    for relpath in files | set(links):
        rescan_path(store, root_fd, relpath)
    done.paths |= files | set(links)
    return done


def has_variant_link(candidates: Mapping[str | None, Candidate]) -> bool:
    """Whether a name has a variant that is a symlink (followed or not)."""
    return any(level is not None and candidate.link_target is not None
               for level, candidate in candidates.items())


def _inside_foreign(store: Store, path: str) -> bool:
    """Whether ``path`` (outside every tree) is below a directory in level position, rather
    than such a directory itself (which may be a level appearing)."""
    depth = 2 if store.layout is Layout.GLIBC else 1
    return path.count("/") >= depth


def _below(relpath: str, directories: set[str]) -> bool:
    return any(relpath.startswith(f"{directory}/") for directory in directories)


class Watcher:
    """An inotify instance watching every directory under the ROOT fd.

    :meth:`sync` (blocking: run it in a thread) adds watches for directories that appeared and
    drops those that left; :meth:`next_changes` waits for the next batch of changes.
    """

    def __init__(self, root_fd: int) -> None:
        self._root_fd = root_fd
        self._fd = check(libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "inotify_init1")
        self._directories: dict[int, str] = {}

    def sync(self, below: Iterable[str] = ("",)) -> list[str]:
        """Watch every directory under ROOT now, or only under the ROOT-relative directories
        ``below`` (those that changed: what was watched there is watched afresh, at the cost
        of those subtrees, not of the store); returns warnings (directories that cannot be
        watched: the view then misses their updates)."""
        tops = sorted(set(below))
        tops = [""] if "" in tops else [top for top in tops if not _below(top, set(tops))]
        stale = {wd for wd, relpath in self._directories.items()
                 if any(relpath == top or _below(relpath, {top}) or not top for top in tops)}
        warnings: list[str] = []
        seen: dict[int, str] = {}
        for top in tops:
            if top.count("/") + 1 > MAX_WATCH_DEPTH:
                continue
            try:
                top_fd = open_dir_beneath(self._root_fd, top)
            except OSError:
                continue  # gone, or no directory now
            try:
                self._watch_below(top_fd, top, seen, warnings)
            finally:
                os.close(top_fd)
        for wd in stale - seen.keys():
            libc.inotify_rm_watch(self._fd, wd)
        for wd in stale:
            self._directories.pop(wd, None)
        self._directories.update(seen)
        return warnings

    def _watch_below(self, top_fd: int, top: str, seen: dict[int, str],
                     warnings: list[str]) -> None:
        """Watch the directory ``top`` (open as ``top_fd``) and every one below it, into
        ``seen`` (watch descriptor → ROOT-relative path)."""
        for path, dirs, _files, dir_fd in os.fwalk(".", dir_fd=top_fd):
            below = "" if path == "." else posixpath.relpath(path, ".")
            relpath = posixpath.join(top, below) if top and below else top or below
            if relpath.count("/") + 1 >= MAX_WATCH_DEPTH:
                dirs.clear()
            try:
                wd = check(libc.inotify_add_watch(
                    self._fd, f"/proc/self/fd/{dir_fd}".encode(), WATCH_MASK),
                    "inotify_add_watch")
            except OSError as exc:
                warnings.append(f"cannot watch {relpath or '.'}: {exc.strerror}; "
                                "changes there are not followed")
                continue
            seen[wd] = relpath

    def _read(self) -> list[Event]:
        events: list[Event] = []
        while True:
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                return events
            events += decode_events(data)

    async def next_changes(self, settle: float = 0.05, limit: float = 0.5,
                           noticed: Callable[[Changes], None] = lambda changes: None,
                           ) -> Changes:
        """Wait for changes, then gather more until none came for ``settle`` seconds (a
        package manager writes, then renames) or ``limit`` seconds passed. ``noticed`` gets
        the changes of each read as they come, before the batch is complete (each read is
        mapped once: the batch is what ``noticed`` got, merged)."""
        events: list[Event] = []
        while not events:
            await trio.lowlevel.wait_readable(self._fd)
            events = self._read()
        reads = [changes_of(events, self._directories)]
        noticed(reads[-1])
        with trio.move_on_after(limit):
            while True:
                with trio.move_on_after(settle) as quiet:
                    await trio.lowlevel.wait_readable(self._fd)
                if quiet.cancelled_caught:
                    break
                reads.append(changes_of(self._read(), self._directories))
                noticed(reads[-1])
        return merged(reads)

    def close(self) -> None:
        os.close(self._fd)
