"""Scanning a variant store: what is on disk under ROOT, gathered into a
:class:`~hwcaps_fs.core.model.Store` of candidates per view path.

Scanning does all the I/O (``fstatat``, reading ELF headers and ``security.capability``) through
directory file descriptors opened from ROOT (:mod:`hwcaps_fs.store.fds`), never through paths
that could cross a mount: the daemon may mount over ROOT itself, and a path resolved through its
own mountpoint would ask the daemon, which is busy scanning (a deadlock beyond ``kill -9``).
Symlinks are therefore resolved here, one component at a time from the ROOT fd, and only while
they stay inside ROOT.

Nothing found in the store makes a scan fail: an odd file becomes a candidate with a
``problem`` that resolution skips, an odd directory a line in ``warnings``. Only a ROOT that is
not a usable directory is an error (:class:`~hwcaps_fs.errors.PathError`).
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat

from hwcaps_fs.core.access import DirAccess, acl_bits, reachable_bits
from hwcaps_fs.core.levels import (
    ALL_LEVEL_NAMES,
    LOADER_IA32_LEVELS,
    Architecture,
    architecture_of_level,
)
from hwcaps_fs.core.model import (
    GLIBC_HWCAPS_DIR,
    Candidate,
    DirInfo,
    Files,
    Layout,
    Store,
    tree_roots,
)
from hwcaps_fs.errors import PathError, show
from hwcaps_fs.store.fds import OPEN_DIR_FLAGS, list_dir, open_dir_beneath
from hwcaps_fs.store.files import (
    ROOT_DIR,
    FileReader,
    access_acl,
    ancestors,
    dir_access,
    join,
)

#: Directories below a tree's top that are merged into the view; deeper ones are ignored with
#: a warning. Bin directories are shallow, and the scan, the watches and every open walk the
#: path one component at a time, so an unbounded depth would be unbounded work (and recursion).
MAX_DEPTH = 32

def detect_layout(root_fd: int) -> Layout:
    """``glibc`` when ROOT has a ``glibc-hwcaps`` directory; ``loader`` when one of its
    top-level directories is named like a level of any architecture (``x86-64-v1``...);
    else ``glibc`` (a plain bin directory is a glibc store with no variants)."""
    names = {name for name, is_dir in list_dir(root_fd) if is_dir}
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
    root_parents: tuple[DirAccess, ...] | None = None, *, read_baselines: bool = True,
    files: Files | None = None, chdir: bool = False,
) -> Store:
    """Scan the store whose directory is open as ``root_fd`` (which stays open and is only
    used through ``*at`` calls, so ROOT may already be mounted over); ``read_baselines``: see
    :class:`~hwcaps_fs.core.model.Store`. ``files`` is the empty dict to become the store's
    ``files``, filled one name at a time (the first scan's sends them on as they come);
    ``chdir``: see :class:`~hwcaps_fs.store.files.FileReader`.

    ``root_display`` is ROOT's canonical absolute path: it names the store in messages and lets
    absolute symlinks that point back inside ROOT be followed without crossing the mount.
    ``root_parents`` (None: :func:`parents_of` ``root_display``) must be given once ROOT may be
    below a mount of ours, since looking its parents up by path could then cross it.
    """
    if root_parents is None:
        root_parents = parents_of(root_display)
    try:
        store = Store(root_display, layout or detect_layout(root_fd), architecture,
                      {} if files is None else files, root_parents=root_parents,
                      read_baselines=read_baselines)
    except OSError as exc:
        raise PathError(f"{root_display}: cannot read: {exc.strerror}") from None
    _Scanner(root_fd, store, chdir=chdir).scan_all()
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
                        store.root_parents, read_baselines=store.read_baselines)
        store.files, store.dirs = fresh.files, fresh.dirs
        store.warnings = fresh.warnings
        return list(fresh.warnings)
    prefix = reldir + "/"
    for table in (store.files, store.dirs):
        for name in [name for name in table if name == reldir or name.startswith(prefix)]:
            del table[name]
    scanner = _Scanner(root_fd, store, warnings=[])
    scanner.merge_subtree(reldir)
    return scanner.warnings


def parents_of(path: str) -> tuple[DirAccess, ...]:
    """The :class:`DirAccess` of each of the directories above the absolute ``path``, ``/``
    first (unknown ones as :data:`~hwcaps_fs.core.access.UNKNOWN_DIR`)."""
    return tuple(dir_access(parent) for parent in ancestors(path))


class _Scanner:
    """One scan's state: the ROOT fd, the store being filled and the reader of its files."""

    def __init__(self, root_fd: int, store: Store, warnings: list[str] | None = None, *,
                 chdir: bool = False) -> None:
        self.root_fd = root_fd
        self.store = store
        self.roots = tree_roots(store.layout, store.architecture)
        self.warnings = store.warnings if warnings is None else warnings
        self.files = FileReader(root_fd, store.root, self.roots, store.root_parents,
                                self.warnings, read_baselines=store.read_baselines,
                                chdir=chdir)

    # -- the whole store -------------------------------------------------------------------

    def scan_all(self) -> None:
        self._report_foreign_dirs()
        for path, access in zip(ancestors(self.store.root), self.store.root_parents,
                                strict=False):
            self.files.report_acl(path, access.acl)
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
                path = join(where, name)
                if path in known:
                    continue
                if not is_dir:
                    self.warn(f"ignored {show(path)}: not a level directory")
                    continue
                self.warn(f"ignored {show(path)}: {self._foreign_reason(name)}")
        finally:
            os.close(parent)

    def _foreign_reason(self, name: str) -> str:
        arch = self.store.architecture
        other = architecture_of_level(name)
        layout = self.store.layout.value
        if name in LOADER_IA32_LEVELS:
            return "a hwcaps-loader level for 32-bit x86 builds; glibc-hwcaps has none"
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
                fd = self._open_dir(join(top, reldir))
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
        info_path = join(self.roots[info_level], reldir) if fds else ""
        above = self.files.searched(posixpath.dirname(info_path)) if info_path else []
        st = os.fstat(info_fd)
        reachable = reachable_bits(st.st_uid, st.st_gid, [*self.store.root_parents, *above])
        self.store.dirs[reldir] = DirInfo.from_stat(
            st, path=reldir, reachable_bits=reachable & acl_bits(access_acl(info_fd)))
        # Names first, stat one name at a time: a directory may hold a hundred thousand.
        found: dict[str, list[str | None]] = {}
        for level, fd in fds.items():
            for name, _ in self._entries(fd, join(self.roots[level], reldir)):
                if not self._hidden(level, reldir, name):
                    found.setdefault(name, []).append(level)
        for name in sorted(found):
            stats = {}
            for level in found[name]:
                try:
                    stats[level] = os.stat(name, dir_fd=fds[level], follow_symlinks=False)
                except OSError as exc:
                    where = join(self.roots[level], reldir, name)
                    self.warn(f"ignored {show(where)}: {exc.strerror}")
            if stats:
                self._merge_entry(join(reldir, name), name, stats, fds)

    def _merge_entry(
        self, relpath: str, name: str, stats: dict[str | None, os.stat_result],
        fds: dict[str | None, int],
    ) -> None:
        dir_levels = [level for level, st in stats.items() if stat.S_ISDIR(st.st_mode)]
        if not dir_levels:
            self.store.files[relpath] = {
                level: self.files.candidate(level, relpath, fds[level], name, st)
                for level, st in stats.items()
            }
            return
        for level in stats.keys() - set(dir_levels):
            path = join(self.roots[level], relpath)
            self.warn(f"ignored {show(path)}: another tree has a directory of that name")
        if relpath.count("/") >= MAX_DEPTH:
            for level in dir_levels:
                path = join(self.roots[level], relpath)
                self.warn(f"ignored {show(path)}: more than {MAX_DEPTH} directories deep")
            return
        subfds: dict[str | None, int] = {}
        try:
            for level in dir_levels:
                try:
                    subfds[level] = os.open(name, OPEN_DIR_FLAGS, dir_fd=fds[level])
                except OSError as exc:
                    path = join(self.roots[level], relpath)
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
            return list(list_dir(fd))
        except OSError as exc:
            self.warn(f"cannot list {show(path or ROOT_DIR)}: {exc.strerror}")
            return []

    def _open_dir(self, path: str) -> int | None:
        """An fd of the ROOT-relative directory ``path``; None when it is not a directory."""
        try:
            return open_dir_beneath(self.root_fd, path)
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                self.warn(f"cannot open {show(path)}: {exc.strerror}")
            return None

    # -- one path --------------------------------------------------------------------------

    def candidates(self, relpath: str) -> dict[str | None, Candidate]:
        reldir, name = posixpath.split(relpath)
        found: dict[str | None, Candidate] = {}
        for level, top in self.roots.items():
            if self._hidden(level, reldir, name):
                continue
            fd = self._open_dir(join(top, reldir))
            if fd is None:
                continue
            try:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not stat.S_ISDIR(st.st_mode):
                    found[level] = self.files.candidate(level, relpath, fd, name, st)
            except OSError:
                pass
            finally:
                os.close(fd)
        return found

    def warn(self, message: str) -> None:
        self.warnings.append(message)

