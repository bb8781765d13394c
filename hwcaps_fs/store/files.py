"""Reading one file of the store as a :class:`~hwcaps_fs.core.model.Candidate`: its stat,
ELF facts and file capabilities, the symlinks that lead to it (followed only while they stay
inside ROOT), and what the directories and links on the way (ROOT's parents included) and the
POSIX ACLs say about trust and reachability.

Everything goes through the ROOT directory fd (:mod:`hwcaps_fs.store.fds`), never through a
path that could cross a mount over ROOT.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import stat

from hwcaps_fs.core.access import (
    ACL_XATTR,
    UNKNOWN_DIR,
    DirAccess,
    acl_bits,
    extended,
    reachable_bits,
    writable_by_others,
)
from hwcaps_fs.core.elf import ElfError, read_elf_facts_fd
from hwcaps_fs.core.model import Candidate, shared
from hwcaps_fs.errors import show
from hwcaps_fs.store.fds import OPEN_FILE_FLAGS

#: The xattr that carries file capabilities (kept so the view can answer it from memory).
CAPABILITY_XATTR = "security.capability"

#: Symlinks followed for one name before it counts as a loop (the kernel's MAXSYMLINKS).
MAX_SYMLINKS = 40

#: What to call the kinds of files that cannot be served.
FILE_KINDS: dict[int, str] = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFLNK: "a symlink",
}

#: How messages name ROOT itself among the directories below it.
ROOT_DIR = "."


def join(*parts: str) -> str:
    """ROOT-relative path components joined, the empty ones ("" is ROOT) left out (one part
    left is returned as it is: a baseline's path is its view path, not a copy of it)."""
    return "/".join(filter(None, parts))


def parent(relpath: str) -> str:
    """The directory of the ROOT-relative ``relpath`` ("" for ROOT): what
    :func:`posixpath.dirname` says of such a path, in a fraction of its time (it is asked
    for every name of the store)."""
    return relpath.rpartition("/")[0]


def ancestors(path: str) -> tuple[str, ...]:
    """The directories above the absolute ``path``, ``/`` first."""
    parents = []
    parent = posixpath.dirname(path)
    while parent != "/":
        parents.append(parent)
        parent = posixpath.dirname(parent)
    return ("/", *reversed(parents))


def dir_access(path: str, dir_fd: int | None = None) -> DirAccess:
    """Owner, mode and ACL of the directory ``path`` (relative to ``dir_fd`` and not following
    a last symlink, if given); :data:`UNKNOWN_DIR` when it cannot be stat'ed."""
    try:
        st = os.stat(path, dir_fd=dir_fd, follow_symlinks=dir_fd is None)
    except OSError:
        return UNKNOWN_DIR
    # getxattr has no *at form: the fd's /proc link reaches the directory without a lookup
    # of ROOT's path, which may be below our own mount.
    where = path if dir_fd is None else f"/proc/self/fd/{dir_fd}/{path}"
    return DirAccess(st.st_uid, st.st_gid, st.st_mode, acl_bits(access_acl(where)))


def untrusted_path(path: str) -> str | None:
    """What a non-root user could replace on the way to the absolute ``path``, a place no
    store holds, said as a reason (None when nothing): the rule of
    :meth:`FileReader.untrusted`, followed from ``/`` as the kernel follows it. Every directory
    looked up in must be root's and not writable by others (sticky ones count as safe), every
    symlink followed root's, and what the path ends at too. It vouches for what a view points
    root to outside its store (``-o loader_links``) and for a baseline link out of ROOT that
    ``compare`` runs."""
    pending = path.split("/")
    here = "/"
    links = 0
    while pending:
        part = pending.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            here = posixpath.dirname(here)
            continue
        above = dir_access(here)
        if writable_by_others(above.uid, above.mode):
            return f"directory {show(here)} is writable by a non-root user"
        step = posixpath.join(here, part)
        try:
            st = os.lstat(step)
            if not stat.S_ISLNK(st.st_mode):
                here = step
                continue
            if st.st_uid != 0:
                return f"symlink {show(step)} is owned by uid {st.st_uid}, not root"
            links += 1
            if links > MAX_SYMLINKS:
                return f"more than {MAX_SYMLINKS} symlinks (a loop?)"
            target = os.readlink(step)
        except OSError as exc:
            return f"{show(step)}: {exc.strerror}"
        here = "/" if target.startswith("/") else here
        pending = target.split("/") + pending
    try:
        end = os.lstat(here)
    except OSError as exc:
        return f"{show(here)}: {exc.strerror}"
    if end.st_uid != 0:
        return f"{show(here)} is owned by uid {end.st_uid}, not root"
    if writable_by_others(end.st_uid, end.st_mode):
        return f"{show(here)} is writable by group or others"
    return None


def access_acl(file: int | str) -> bytes | None:
    """The raw access ACL of ``file`` (an fd, or a path whose last symlink is not followed),
    None when it has none or it cannot be read."""
    try:
        if isinstance(file, int):
            return os.getxattr(file, ACL_XATTR)
        return os.getxattr(file, ACL_XATTR, follow_symlinks=False)
    except OSError:
        return None


class _Unservable(Exception):
    """Why a name cannot be served (its message becomes the candidate's ``problem``)."""


class FileReader:
    """Reads candidates from the store open as ``root_fd`` (``root`` is its canonical path,
    ``roots`` the directory of each tree, ``root_parents`` the directories above ROOT), with
    caches of the directories on the way: every file of a directory asks about the same ones.
    POSIX ACLs met on the way are reported in ``warnings``. Without ``read_baselines``
    baselines are not opened (see :class:`~hwcaps_fs.core.model.Store`). With ``chdir``
    the reader may change the working directory (a single-threaded process of its own): it
    reads a baseline's extended attributes by a name relative to its directory, not through
    the directory's /proc link, whose path walk took 2.9 µs of the 4.7 a name."""

    def __init__(self, root_fd: int, root: str, roots: dict[str | None, str],
                 root_parents: tuple[DirAccess, ...], warnings: list[str], *,
                 read_baselines: bool = True, chdir: bool = False) -> None:
        self.root_fd = root_fd
        self.read_baselines = read_baselines
        self.chdir = chdir
        self.root = root
        self.roots = roots
        self.root_parents = root_parents
        self.warnings = warnings
        self.chains: dict[str, tuple[tuple[str, DirAccess], ...]] = {}
        self.reachable: dict[tuple[str, str, int, int], int] = {}
        self.untrusted_dirs: dict[str, str | None] = {}
        self.replaceable_parent = next(
            (path for path, access in zip(ancestors(root), root_parents, strict=False)
             if writable_by_others(access.uid, access.mode)), None)

    def candidate(
        self, level: str | None, relpath: str, dir_fd: int, name: str, lst: os.stat_result
    ) -> Candidate:
        """The candidate for ``name`` (lstat ``lst``) in the directory open as ``dir_fd``."""
        path = join(self.roots[level], relpath)
        link_target = None
        source, st, open_at = path, lst, (dir_fd, name)
        links: list[tuple[str, int]] = []
        try:
            if stat.S_ISLNK(lst.st_mode):
                link_target = os.readlink(name, dir_fd=dir_fd)
                source, st = self._follow(path, links)
                open_at = (self.root_fd, source)
            kind = FILE_KINDS.get(stat.S_IFMT(st.st_mode))
            if kind is not None:
                raise _Unservable(f"{kind}, not a regular file")
            if level is None and not self.read_baselines:
                return self._baseline(path, source, st, open_at, link_target, links)
            return self._read_file(level, path, source, open_at, link_target, links)
        except _Unservable as exc:
            untrusted = self.untrusted(None, links) if link_target else None
            return Candidate.from_stat(st, level=level, path=path, source=source,
                                       problem=str(exc), link_target=link_target,
                                       untrusted=untrusted)
        except OSError as exc:
            return Candidate.from_stat(st, level=level, path=path, source=source,
                                       problem=f"cannot read: {exc.strerror}",
                                       link_target=link_target)

    def _read_file(
        self, level: str | None, path: str, source: str, open_at: tuple[int, str],
        link_target: str | None, links: list[tuple[str, int]],
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
            acl = acl_bits(access_acl(fd))
            self.report_acl(source, acl)
            return Candidate.from_stat(
                st, level=level, path=path, source=source, elf=elf, capability=_capability(fd),
                untrusted=self.untrusted(source, links), problem=problem,
                link_target=link_target,
                reachable_bits=shared(self._reachable(path, source, st) & acl),
            )
        finally:
            os.close(fd)

    def _baseline(
        self, path: str, source: str, st: os.stat_result, open_at: tuple[int, str],
        link_target: str | None, links: list[tuple[str, int]],
    ) -> Candidate:
        """A baseline as serving it needs it, without opening it: no ELF facts, the file
        capabilities and ACL read through the directory's /proc link (one listxattr for the
        many files that have neither)."""
        if self.chdir:
            os.fchdir(open_at[0])
            where = open_at[1]
        else:
            where = f"/proc/self/fd/{open_at[0]}/{open_at[1]}"
        try:
            names = os.listxattr(where, follow_symlinks=False)
        except OSError:
            names = []
        capability = None
        if CAPABILITY_XATTR in names:
            with contextlib.suppress(OSError):
                capability = os.getxattr(where, CAPABILITY_XATTR, follow_symlinks=False)
        acl = acl_bits(access_acl(where) if ACL_XATTR in names else None)
        self.report_acl(source, acl)
        return Candidate.from_stat(
            st, level=None, path=path, source=source, capability=capability,
            untrusted=self.untrusted(source, links), link_target=link_target,
            reachable_bits=shared(self._reachable(path, source, st) & acl),
        )

    def _follow(self, path: str, links: list[tuple[str, int]]) -> tuple[str, os.stat_result]:
        """Resolve the symlink ``path`` inside ROOT: (final ROOT-relative path, its lstat).
        Each symlink followed on the way is appended to ``links`` with its owner, ``path``
        first: they decide what is served as much as the directories do.

        Absolute targets under ``store.root`` are taken as ROOT-relative, since resolving
        them as given could cross a mount over ROOT.
        """
        pending = path.split("/")
        done: list[str] = []
        target = ""
        while pending:
            part = pending.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                if not done:
                    raise _Unservable(f"symlink leaves {show(self.root)} (-> {show(target)})")
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
            links.append((here, st.st_uid))
            if len(links) > MAX_SYMLINKS:
                raise _Unservable(f"more than {MAX_SYMLINKS} symlinks (a loop?)")
            target = os.readlink(here, dir_fd=self.root_fd)
            if target.startswith("/"):
                inside = self.root.rstrip("/") + "/"
                if not target.startswith(inside):
                    raise _Unservable(f"symlink leaves {show(self.root)} (-> {show(target)})")
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
            here = dir_access(name, self.root_fd)
            self.report_acl(reldir or self.root, here.acl)
            chain = self.chains[reldir] = (*above, (name, here))
        return chain

    def searched(self, reldir: str) -> list[DirAccess]:
        return [access for _, access in self._chain(reldir)]

    def _reachable(self, path: str, source: str, st: os.stat_result) -> int:
        """:func:`~hwcaps_fs.core.access.reachable_bits` of the file found at ``path`` (ROOT's
        parents, and the directories down to ``path`` and to ``source`` if a symlink led
        there); cached, since the files of a directory mostly share an owner."""
        key = (parent(path), parent(source), st.st_uid, st.st_gid)
        bits = self.reachable.get(key)
        if bits is None:
            directories = [*self.root_parents,
                           *(access for reldir in dict.fromkeys(key[:2])
                             for access in self.searched(reldir))]
            bits = self.reachable[key] = reachable_bits(st.st_uid, st.st_gid, directories)
        return bits

    def untrusted(self, source: str | None, links: list[tuple[str, int]]) -> str | None:
        """What a non-root user could replace on the way to ``source`` (ROOT-relative; None
        when the way ends in a symlink not followed), said as a reason, or None when nothing:
        a directory above ROOT (they could put another store in its place), a symlink of
        ``links`` not owned by root or a directory it sits in, or a directory from ROOT down to
        ``source``. Sticky directories count as safe: the root-owned entries in them are."""
        if self.replaceable_parent is not None:
            return (f"directory {show(self.replaceable_parent)} above ROOT is writable by a "
                    "non-root user")
        for link, uid in links:
            reason = self._untrusted_dir(parent(link))
            if reason is not None:
                return reason
            if uid != 0:
                return f"symlink {show(link)} is owned by uid {uid}, not root"
        return None if source is None else self._untrusted_dir(parent(source))

    def _untrusted_dir(self, reldir: str) -> str | None:
        """Why a non-root user could replace what the first of the directories from ROOT down
        to ``reldir`` holds, if they could (cached, as the chains are)."""
        if reldir not in self.untrusted_dirs:
            self.untrusted_dirs[reldir] = next(
                (f"directory {show(name)} is writable by a non-root user"
                 for name, access in self._chain(reldir)
                 if writable_by_others(access.uid, access.mode)), None)
        return self.untrusted_dirs[reldir]

    def report_acl(self, path: str, bits: int) -> None:
        """Warn that ``path`` has an ACL that takes something away (:func:`acl_bits`)."""
        if extended(bits):
            self.warnings.append(
                f"{show(path)}: a POSIX ACL names users or groups: through the view, its group "
                "and others get only what every entry grants")


def _capability(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd, CAPABILITY_XATTR)
    except OSError:
        return None

