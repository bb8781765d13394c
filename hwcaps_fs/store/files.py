"""Reading one file of the store as a :class:`~hwcaps_fs.core.model.Candidate`: its stat,
ELF facts and file capabilities, the symlinks that lead to it (followed only while they stay
inside ROOT), and what the directories on the way say about trust and reachability.

Everything goes through the ROOT directory fd (:mod:`hwcaps_fs.store.fds`), never through a
path that could cross a mount over ROOT.
"""

from __future__ import annotations

import os
import posixpath
import stat

from hwcaps_fs.core.access import UNKNOWN_DIR, DirAccess, reachable_bits, writable_by_others
from hwcaps_fs.core.elf import ElfError, read_elf_facts_fd
from hwcaps_fs.core.model import Candidate
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

#: ``untrusted_dir`` of a candidate when ROOT itself is the directory a non-root user can write.
ROOT_DIR = "."


def join(*parts: str) -> str:
    """ROOT-relative path components joined, the empty ones ("" is ROOT) left out."""
    return "/".join(part for part in parts if part)


class _Unservable(Exception):
    """Why a name cannot be served (its message becomes the candidate's ``problem``)."""


class FileReader:
    """Reads candidates from the store open as ``root_fd`` (``root`` is its canonical path,
    ``roots`` the directory of each tree, ``root_parents`` the directories above ROOT), with
    caches of the directories on the way: every file of a directory asks about the same ones."""

    def __init__(self, root_fd: int, root: str, roots: dict[str | None, str],
                 root_parents: tuple[DirAccess, ...]) -> None:
        self.root_fd = root_fd
        self.root = root
        self.roots = roots
        self.root_parents = root_parents
        self.chains: dict[str, tuple[tuple[str, DirAccess], ...]] = {}
        self.reachable: dict[tuple[str, str, int, int], int] = {}

    def candidate(
        self, level: str | None, relpath: str, dir_fd: int, name: str, lst: os.stat_result
    ) -> Candidate:
        """The candidate for ``name`` (lstat ``lst``) in the directory open as ``dir_fd``."""
        path = join(self.roots[level], relpath)
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
            return Candidate.from_stat(st, level=level, path=path, source=source,
                                       problem=str(exc), link_target=link_target,
                                       untrusted_dir=untrusted)
        except OSError as exc:
            return Candidate.from_stat(st, level=level, path=path, source=source,
                                       problem=f"cannot read: {exc.strerror}",
                                       link_target=link_target)

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
            return Candidate.from_stat(
                st, level=level, path=path, source=source, elf=elf, capability=_capability(fd),
                untrusted_dir=self._untrusted_dir(posixpath.dirname(source)), problem=problem,
                link_target=link_target, reachable_bits=self._reachable(path, source, st),
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
            links += 1
            if links > MAX_SYMLINKS:
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
            try:
                st = os.stat(name, dir_fd=self.root_fd, follow_symlinks=False)
                here = DirAccess(st.st_uid, st.st_gid, st.st_mode)
            except OSError:
                here = UNKNOWN_DIR
            chain = self.chains[reldir] = (*above, (name, here))
        return chain

    def searched(self, reldir: str) -> list[DirAccess]:
        return [access for _, access in self._chain(reldir)]

    def _reachable(self, path: str, source: str, st: os.stat_result) -> int:
        """:func:`~hwcaps_fs.core.access.reachable_bits` of the file found at ``path`` (ROOT's
        parents, and the directories down to ``path`` and to ``source`` if a symlink led
        there); cached, since the files of a directory mostly share an owner."""
        key = (posixpath.dirname(path), posixpath.dirname(source), st.st_uid, st.st_gid)
        bits = self.reachable.get(key)
        if bits is None:
            directories = [*self.root_parents,
                           *(access for reldir in dict.fromkeys(key[:2])
                             for access in self.searched(reldir))]
            bits = self.reachable[key] = reachable_bits(st.st_uid, st.st_gid, directories)
        return bits

    def _untrusted_dir(self, reldir: str) -> str | None:
        """The first directory from ROOT down to ``reldir`` that a non-root user may write."""
        return next((name for name, access in self._chain(reldir)
                     if writable_by_others(access.uid, access.mode)), None)


def _capability(fd: int) -> bytes | None:
    try:
        return os.getxattr(fd, CAPABILITY_XATTR)
    except OSError:
        return None

