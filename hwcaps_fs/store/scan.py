"""Variant stores: what is on disk under ROOT, gathered into candidates per relative path.

Two layouts are understood:

* ``glibc``: ``ROOT/<relpath>`` is the baseline, ``ROOT/glibc-hwcaps/<level>/<relpath>`` the
  variants (the layout glibc uses for libraries);
* ``loader``: ``ROOT/<level>/<relpath>`` with ``x86-64-v1`` as the baseline (hwcaps-loader's).

Each level (and the baseline) is a *tree*; the view is the recursive merge of the trees, so a
directory that exists only in one variant tree still appears.

Scanning does all the I/O (``fstatat``, reading ELF headers and ``security.capability``) through
directory file descriptors opened from ROOT, never through paths that could cross a mount: the
daemon may mount over ROOT itself, and a path resolved through its own mountpoint would ask the
daemon, which is busy scanning (a deadlock beyond ``kill -9``). Symlinks are therefore resolved
here, one component at a time from the ROOT fd, and only while they stay inside ROOT.

Nothing found in the store makes a scan fail: an odd file becomes a candidate with a
``problem`` that resolution skips, an odd directory a line in ``warnings``. Only a ROOT that is
not a usable directory is an error (:class:`~hwcaps_fs.errors.PathError`).

The result is plain data that :mod:`hwcaps_fs.resolve` decides on without touching the disk.
Names that are not valid UTF-8 are kept as :func:`os.fsdecode` gives them (surrogate escapes),
so every string here can be handed back to ``os`` functions unchanged.
"""

from __future__ import annotations

import enum
import errno
import os
import posixpath
import stat
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from hwcaps_fs.access import PERMISSION_BITS, DirAccess, reachable_bits, restricted
from hwcaps_fs.elf import ElfError, ElfFacts, read_elf_facts_fd
from hwcaps_fs.errors import PathError
from hwcaps_fs.levels import ALL_LEVEL_NAMES, Architecture, architecture_of_level


class Layout(enum.Enum):
    GLIBC = "glibc"
    LOADER = "loader"


#: The directory that holds the variants in the glibc layout (hidden from the view).
GLIBC_HWCAPS_DIR = "glibc-hwcaps"

#: The xattr that carries file capabilities (kept so the view can answer it from memory).
CAPABILITY_XATTR = "security.capability"

#: Symlinks followed for one name before it counts as a loop (the kernel's MAXSYMLINKS).
MAX_SYMLINKS = 40

#: Directories below a tree's top that are merged into the view; deeper ones are ignored with
#: a warning. Bin directories are shallow, and the scan, the watches and every open walk the
#: path one component at a time, so an unbounded depth would be unbounded work (and recursion).
MAX_DEPTH = 32

#: What a directory that cannot be stat'ed counts as: nobody's, writable by others, searchable
#: by no one (so nothing below it is trusted or shown as reachable by anyone but root).
UNKNOWN_DIR = DirAccess(uid=-1, gid=-1, mode=stat.S_IFDIR | stat.S_IWOTH)

#: How candidates are opened: never follow a symlink the scan has not vetted, never block on
#: a FIFO that slipped in between the stat and the open.
OPEN_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
OPEN_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

#: What to call the kinds of files that cannot be served.
FILE_KINDS: dict[int, str] = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symlink",
}

#: ``untrusted_dir`` of a candidate when ROOT itself is the directory a non-root user can write.
ROOT_DIR = "."


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
    the first directory between ROOT and the file that a non-root user could write, if any
    (``"."`` is ROOT itself). ``reachable_bits`` are the permission bits left once the
    directories to be searched on the way are taken into account (:mod:`hwcaps_fs.access`).
    ``link_target`` is what ``path`` points to when it is a symlink (``readlink``), so that a
    view can still present a symlink that leaves ROOT as a symlink.
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
    link_target: str | None = None
    reachable_bits: int = PERMISSION_BITS

    @property
    def reachable_mode(self) -> int:
        """``mode`` without the permissions the directories above deny (what a view shows)."""
        return restricted(self.mode, self.reachable_bits)

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


@dataclass(frozen=True)
class DirInfo:
    """A directory of the merged view: its stat facts come from the baseline directory if there
    is one, else from the first variant directory found; ``reachable_bits`` as for
    :class:`Candidate`."""

    path: str
    mode: int
    uid: int
    gid: int
    ino: int
    dev: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    reachable_bits: int = PERMISSION_BITS

    @property
    def reachable_mode(self) -> int:
        return restricted(self.mode, self.reachable_bits)


@dataclass
class Store:
    """A scanned store.

    ``files`` maps each relative path of the view (``bin/foo``, never starting with ``/``) to
    its candidates by level (None = baseline). ``dirs`` maps the relative path of every
    directory of the merged view (``""`` is ROOT itself) to its info. ``warnings`` are
    one-line messages about what was ignored (unknown level directories, unreadable ones...).
    ``root_parents`` are the directories above ROOT (``/`` first): searching them is part of
    reaching any file of the store, so they count in ``reachable_bits``.
    """

    root: str
    layout: Layout
    architecture: Architecture
    files: dict[str, dict[str | None, Candidate]] = field(default_factory=dict)
    dirs: dict[str, DirInfo] = field(default_factory=dict)
    unknown_level_dirs: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    root_parents: tuple[DirAccess, ...] = ()

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
    if store.layout is Layout.LOADER or _first(path) == GLIBC_HWCAPS_DIR:
        return None
    return None, path


def detect_layout(root_fd: int) -> Layout:
    """``glibc`` when ROOT has a ``glibc-hwcaps`` directory; ``loader`` when one of its
    top-level directories is named like a level of any architecture (``x86-64-v1``...);
    else ``glibc`` (a plain bin directory is a glibc store with no variants)."""
    names = {name for name, is_dir in _list_dir(root_fd) if is_dir}
    if GLIBC_HWCAPS_DIR in names:
        return Layout.GLIBC
    return Layout.LOADER if names & ALL_LEVEL_NAMES else Layout.GLIBC


def scan(root: str, architecture: Architecture, layout: Layout | None = None) -> Store:
    """Scan the store at the path ``root`` (None ``layout``: :func:`detect_layout`).

    For a store that is about to be mounted over, open it first and use :func:`scan_fd`.
    """
    try:
        root_fd = os.open(root, OPEN_DIR_FLAGS & ~os.O_NOFOLLOW)
    except FileNotFoundError:
        raise PathError(f"{root}: no such directory") from None
    except NotADirectoryError:
        raise PathError(f"{root}: not a directory") from None
    except OSError as exc:
        raise PathError(f"{root}: cannot open: {exc.strerror}") from None
    try:
        return scan_fd(root_fd, os.path.realpath(root), architecture, layout)
    finally:
        os.close(root_fd)


def scan_fd(
    root_fd: int, root_display: str, architecture: Architecture, layout: Layout | None = None,
    root_parents: tuple[DirAccess, ...] | None = None,
) -> Store:
    """Scan the store whose directory is open as ``root_fd`` (which stays open and is only
    used through ``*at`` calls, so ROOT may already be mounted over).

    ``root_display`` is ROOT's canonical absolute path: it names the store in messages and lets
    absolute symlinks that point back inside ROOT be followed without crossing the mount.
    ``root_parents`` (None: :func:`parents_of` ``root_display``) must be given once ROOT may be
    below a mount of ours, since looking its parents up by path could then cross it.
    """
    if root_parents is None:
        root_parents = parents_of(root_display)
    try:
        store = Store(root_display, layout or detect_layout(root_fd), architecture,
                      root_parents=root_parents)
    except OSError as exc:
        raise PathError(f"{root_display}: cannot read: {exc.strerror}") from None
    _Scanner(root_fd, store).scan_all()
    return store


def scan_path(store: Store, root_fd: int, relpath: str) -> dict[str | None, Candidate]:
    """The candidates of one view path, scanned afresh (empty when it is no file in any tree).
    ``store`` is not changed; see :func:`rescan_path`."""
    return _Scanner(root_fd, store).candidates(relpath)


def rescan_path(store: Store, root_fd: int, relpath: str) -> dict[str | None, Candidate]:
    """Rescan one view path and record the result in ``store.files`` (removing the name when
    no tree has it any more); returns its candidates."""
    found = scan_path(store, root_fd, relpath)
    if found:
        store.files[relpath] = found
    else:
        store.files.pop(relpath, None)
    return found


def rescan_dir(store: Store, root_fd: int, reldir: str) -> list[str]:
    """Rescan the view directory ``reldir`` and everything below it, replacing what ``store``
    knew about that subtree (``""`` rescans everything). Returns the warnings of this rescan,
    which are not added to ``store.warnings``."""
    if not reldir:
        fresh = scan_fd(root_fd, store.root, store.architecture, store.layout,
                        store.root_parents)
        store.files, store.dirs = fresh.files, fresh.dirs
        store.unknown_level_dirs, store.warnings = fresh.unknown_level_dirs, fresh.warnings
        return list(fresh.warnings)
    prefix = reldir + "/"
    for table in (store.files, store.dirs):
        for name in [name for name in table if name == reldir or name.startswith(prefix)]:
            del table[name]
    scanner = _Scanner(root_fd, store, warnings=[])
    scanner.merge_subtree(reldir)
    return scanner.warnings


def parents_of(path: str) -> tuple[DirAccess, ...]:
    """The directories above the absolute ``path``, ``/`` first (unknown ones as
    :data:`UNKNOWN_DIR`)."""
    parents = []
    parent = posixpath.dirname(path)
    while True:
        try:
            st = os.stat(parent)
            parents.append(DirAccess(st.st_uid, st.st_gid, st.st_mode))
        except OSError:
            parents.append(UNKNOWN_DIR)
        if parent == "/":
            return tuple(reversed(parents))
        parent = posixpath.dirname(parent)


def show(path: str) -> str:
    """``path`` printable as UTF-8 (undecodable bytes as ``\\xNN``), for messages."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _join(*parts: str) -> str:
    return "/".join(part for part in parts if part)


def _first(path: str) -> str:
    return path.split("/", 1)[0]


def _list_dir(fd: int) -> Iterator[tuple[str, bool]]:
    """(name, is a real directory) of the entries of the directory open as ``fd``.

    Lists through a fresh fd: ``scandir`` on a shared fd would move its offset for everyone.
    """
    own = os.open(".", OPEN_DIR_FLAGS, dir_fd=fd)
    try:
        with os.scandir(own) as entries:
            for entry in entries:
                yield entry.name, entry.is_dir(follow_symlinks=False)
    finally:
        os.close(own)


class _Unservable(Exception):
    """Why a name cannot be served (its message becomes the candidate's ``problem``)."""


class _Scanner:
    """One scan's state: the ROOT fd, the store being filled and a cache of which directories
    are writable by non-root users."""

    def __init__(self, root_fd: int, store: Store, warnings: list[str] | None = None) -> None:
        self.root_fd = root_fd
        self.store = store
        self.roots = tree_roots(store.layout, store.architecture)
        self.warnings = store.warnings if warnings is None else warnings
        self.chains: dict[str, tuple[tuple[str, DirAccess], ...]] = {}
        self.reachable: dict[tuple[str, str, int, int], int] = {}

    # -- the whole store -------------------------------------------------------------------

    def scan_all(self) -> None:
        self._report_foreign_dirs()
        self.merge_subtree("")

    def _report_foreign_dirs(self) -> None:
        """Record the directories in level position that are not trees of this store."""
        where = GLIBC_HWCAPS_DIR if self.store.layout is Layout.GLIBC else ""
        parent = self._open_dir(where)
        if parent is None:
            return
        known = {top for top in self.roots.values() if top}
        try:
            for name, is_dir in self._entries(parent, where):
                path = _join(where, name)
                if path in known:
                    continue
                if not is_dir:
                    self.warn(f"ignored {show(path)}: not a level directory")
                    continue
                self.store.unknown_level_dirs.append(path)
                self.warn(f"ignored {show(path)}: {self._foreign_reason(name)}")
        finally:
            os.close(parent)

    def _foreign_reason(self, name: str) -> str:
        arch = self.store.architecture
        other = architecture_of_level(name)
        layout = self.store.layout.value
        if other is None:
            return f"not a level name (levels of {arch.name}: {', '.join(self._level_dir_names())})"
        if other.name != arch.name:
            return f"a level of {other.name}, this store serves {arch.name}"
        return f"not a level directory of the {layout} layout"

    def _level_dir_names(self) -> list[str]:
        return [top.rsplit("/", 1)[-1] for top in self.roots.values() if top]

    # -- merging directories ---------------------------------------------------------------

    def merge_subtree(self, reldir: str) -> None:
        fds: dict[str | None, int] = {}
        try:
            for level, top in self.roots.items():
                fd = self._open_dir(_join(top, reldir))
                if fd is not None:
                    fds[level] = fd
            if fds or not reldir:
                self._merge(reldir, fds)
        finally:
            for fd in fds.values():
                os.close(fd)

    def _merge(self, reldir: str, fds: dict[str | None, int]) -> None:
        """Record ``reldir`` (whose directory in each tree that has it is open in ``fds``) and
        everything below it."""
        info_level, info_fd = next(iter(fds.items()), (None, self.root_fd))
        info_path = _join(self.roots[info_level], reldir) if fds else ""
        above = self._searched(posixpath.dirname(info_path)) if info_path else []
        st = os.fstat(info_fd)
        self.store.dirs[reldir] = DirInfo(
            reldir, st.st_mode, st.st_uid, st.st_gid, st.st_ino, st.st_dev, st.st_atime_ns,
            st.st_mtime_ns, st.st_ctime_ns,
            reachable_bits(st.st_uid, st.st_gid, [*self.store.root_parents, *above]))
        found: dict[str, dict[str | None, os.stat_result]] = {}
        for level, fd in fds.items():
            where = _join(self.roots[level], reldir)
            for name, _ in self._entries(fd, where):
                if self._hidden(level, reldir, name):
                    continue
                try:
                    found.setdefault(name, {})[level] = os.stat(
                        name, dir_fd=fd, follow_symlinks=False
                    )
                except OSError as exc:
                    self.warn(f"ignored {show(_join(where, name))}: {exc.strerror}")
        for name in sorted(found):
            self._merge_entry(_join(reldir, name), found[name], fds)

    def _merge_entry(
        self, relpath: str, stats: dict[str | None, os.stat_result], fds: dict[str | None, int]
    ) -> None:
        name = posixpath.basename(relpath)
        dir_levels = [level for level, st in stats.items() if stat.S_ISDIR(st.st_mode)]
        if not dir_levels:
            self.store.files[relpath] = {
                level: self._candidate(level, relpath, fds[level], name, st)
                for level, st in stats.items()
            }
            return
        for level in stats.keys() - set(dir_levels):
            path = _join(self.roots[level], relpath)
            self.warn(f"ignored {show(path)}: another tree has a directory of that name")
        if relpath.count("/") >= MAX_DEPTH:
            for level in dir_levels:
                path = _join(self.roots[level], relpath)
                self.warn(f"ignored {show(path)}: more than {MAX_DEPTH} directories deep")
            return
        subfds: dict[str | None, int] = {}
        try:
            for level in dir_levels:
                try:
                    subfds[level] = os.open(name, OPEN_DIR_FLAGS, dir_fd=fds[level])
                except OSError as exc:
                    path = _join(self.roots[level], relpath)
                    self.warn(f"ignored {show(path)}: cannot open: {exc.strerror}")
            if subfds:
                self._merge(relpath, subfds)
        finally:
            for fd in subfds.values():
                os.close(fd)

    def _hidden(self, level: str | None, reldir: str, name: str) -> bool:
        """``glibc-hwcaps`` is the variants' home, not part of the view."""
        return (
            self.store.layout is Layout.GLIBC
            and level is None
            and not reldir
            and name == GLIBC_HWCAPS_DIR
        )

    def _entries(self, fd: int, path: str) -> list[tuple[str, bool]]:
        try:
            return list(_list_dir(fd))
        except OSError as exc:
            self.warn(f"cannot list {show(path or ROOT_DIR)}: {exc.strerror}")
            return []

    def _open_dir(self, path: str) -> int | None:
        """An fd of the ROOT-relative directory ``path``, opened one component at a time
        without following symlinks; None when it is not a directory."""
        fd = os.open(".", OPEN_DIR_FLAGS, dir_fd=self.root_fd)
        for part in path.split("/") if path else ():
            try:
                sub = os.open(part, OPEN_DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    self.warn(f"cannot open {show(path)}: {exc.strerror}")
                sub = -1
            os.close(fd)
            if sub < 0:
                return None
            fd = sub
        return fd

    # -- one path --------------------------------------------------------------------------

    def candidates(self, relpath: str) -> dict[str | None, Candidate]:
        reldir, name = posixpath.split(relpath)
        found: dict[str | None, Candidate] = {}
        for level, top in self.roots.items():
            if self._hidden(level, reldir, name):
                continue
            fd = self._open_dir(_join(top, reldir))
            if fd is None:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    found[level] = self._candidate(level, relpath, fd, name, st)
            except OSError:
                pass
            finally:
                os.close(fd)
        return found

    def _candidate(
        self, level: str | None, relpath: str, dir_fd: int, name: str, lst: os.stat_result
    ) -> Candidate:
        """The candidate for ``name`` (lstat ``lst``) in the directory open as ``dir_fd``."""
        path = _join(self.roots[level], relpath)
        link_target = None
        source, st, open_at = path, lst, (dir_fd, name)
        try:
            if stat.S_ISLNK(lst.st_mode):
                link_target = os.readlink(name, dir_fd=dir_fd)
                source, st = self._follow(path)
                open_at = (self.root_fd, source)
            kind = FILE_KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is not None:
                raise _Unservable(f"{kind}, not a regular file")
            return self._read_file(level, path, source, open_at, link_target)
        except _Unservable as exc:
            untrusted = self._untrusted_dir(posixpath.dirname(path)) if link_target else None
            return _candidate(level, path, source, st, problem=str(exc), link_target=link_target,
                              untrusted_dir=untrusted)
        except OSError as exc:
            return _candidate(
                level, path, source, st, problem=f"cannot read: {exc.strerror}",
                link_target=link_target,
            )

    def _read_file(
        self, level: str | None, path: str, source: str, open_at: tuple[int, str],
        link_target: str | None,
    ) -> Candidate:
        fd = os.open(open_at[1], OPEN_FILE_FLAGS, dir_fd=open_at[0])
        try:
            st = os.fstat(fd)
            problem = None
            elf = None
            try:
                elf = read_elf_facts_fd(fd)
            except ElfError as exc:
                problem = f"malformed ELF file: {exc}"
            return _candidate(
                level, path, source, st, elf=elf, capability=_capability(fd),
                untrusted_dir=self._untrusted_dir(posixpath.dirname(source)), problem=problem,
                link_target=link_target, reachable=self._reachable(path, source, st),
            )
        finally:
            os.close(fd)

    def _follow(self, path: str) -> tuple[str, os.stat_result]:
        """Resolve the symlink ``path`` inside ROOT: (final ROOT-relative path, its lstat).

        Absolute targets under ``store.root`` are taken as ROOT-relative, since resolving
        them as given could cross a mount over ROOT.
        """
        pending = path.split("/")
        done: list[str] = []
        links = 0
        target = ""
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise _Unservable(f"symlink leaves {show(self.store.root)} (-> {show(target)})")
                done.pop()
                continue
            here = "/".join((*done, part))
            try:
                st = os.stat(here, dir_fd=self.root_fd, follow_symlinks=False)
            except FileNotFoundError:
                raise _Unservable(f"dangling symlink: {show(here)} does not exist") from None
            except NotADirectoryError:
                raise _Unservable(f"dangling symlink: {show(posixpath.dirname(here))} "
                                  "is not a directory") from None
            if not stat.S_ISLNK(st.st_mode):
                done.append(part)
                if pending and not stat.S_ISDIR(st.st_mode):
                    raise _Unservable(f"dangling symlink: {show(here)} is not a directory")
                if not pending:
                    return here, st
                continue
            links += 1
            if links > MAX_SYMLINKS:
                raise _Unservable(f"more than {MAX_SYMLINKS} symlinks (a loop?)")
            target = os.readlink(here, dir_fd=self.root_fd)
            if target.startswith("/"):
                inside = self.store.root.rstrip("/") + "/"
                if not target.startswith(inside):
                    raise _Unservable(f"symlink leaves {show(self.store.root)} (-> {show(target)})")
                done, target = [], target[len(inside) :]
            pending = target.split("/") + pending
        # Only reached when ROOT itself is the target.
        raise _Unservable("symlink to the store's root directory")

    def _chain(self, reldir: str) -> tuple[tuple[str, DirAccess], ...]:
        """The directories from ROOT down to ``reldir`` (ROOT-relative, ``"."`` for ROOT),
        each with its owner and mode; cached, since every file of a directory asks."""
        chain = self.chains.get(reldir)
        if chain is None:
            above = self._chain(posixpath.dirname(reldir)) if reldir else ()
            name = reldir or ROOT_DIR
            try:
                st = os.stat(name, dir_fd=self.root_fd, follow_symlinks=False)
                here = DirAccess(st.st_uid, st.st_gid, st.st_mode)
            except OSError:
                here = UNKNOWN_DIR
            chain = self.chains[reldir] = (*above, (name, here))
        return chain

    def _searched(self, reldir: str) -> list[DirAccess]:
        return [access for _, access in self._chain(reldir)]

    def _reachable(self, path: str, source: str, st: os.stat_result) -> int:
        """:func:`~hwcaps_fs.access.reachable_bits` of the file found at ``path`` (ROOT's
        parents, and the directories down to ``path`` and to ``source`` if a symlink led
        there); cached, since the files of a directory mostly share an owner."""
        key = (posixpath.dirname(path), posixpath.dirname(source), st.st_uid, st.st_gid)
        bits = self.reachable.get(key)
        if bits is None:
            directories = [*self.store.root_parents,
                           *(access for reldir in dict.fromkeys(key[:2])
                             for access in self._searched(reldir))]
            bits = self.reachable[key] = reachable_bits(st.st_uid, st.st_gid, directories)
        return bits

    def _untrusted_dir(self, reldir: str) -> str | None:
        """The first directory from ROOT down to ``reldir`` that a non-root user may write."""
        return next((name for name, access in self._chain(reldir)
                     if writable_by_others(access.uid, access.mode)), None)

    def warn(self, message: str) -> None:
        self.warnings.append(message)


def writable_by_others(uid: int, mode: int) -> bool:
    """Whether someone other than root may replace what a file or directory holds: it is not
    root's, or it is group/other-writable (for a directory, unless sticky)."""
    if uid != 0:
        return True
    if stat.S_ISDIR(mode) and mode & stat.S_ISVTX:
        return False
    return bool(mode & (stat.S_IWGRP | stat.S_IWOTH))


def _capability(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd, CAPABILITY_XATTR)
    except OSError:
        return None


def _candidate(
    level: str | None, path: str, source: str, st: os.stat_result, *,
    elf: ElfFacts | None = None, capability: bytes | None = None,
    untrusted_dir: str | None = None, problem: str | None = None, link_target: str | None = None,
    reachable: int = PERMISSION_BITS,
) -> Candidate:
    return Candidate(
        level, path, source, st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino,
        st.st_dev, st.st_nlink, st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns,
        elf, capability, untrusted_dir, problem, link_target, reachable,
    )
