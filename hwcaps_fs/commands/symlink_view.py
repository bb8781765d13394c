"""The view materialized as a directory of symlinks: the fallback when FUSE cannot be used.

Inside a container without /dev/fuse or CAP_SYS_ADMIN the view cannot be mounted, but the CPU
is known when the container starts, so the view for *this* CPU can be written out once: every
served name becomes a symlink to the file it serves, every directory of the merged view a real
directory. Nothing follows changes to the store afterwards (a container's store does not
change), and privileged programs keep their privileges since the symlinks lead to the real
files. ``-o levels_view`` and ``-o loader_links`` make the names they make in the mounted view
(:mod:`hwcaps_fs.core.view_options`).

Each directory gets the permission bits the FUSE view shows for it (the store directory's,
less what the directories above deny: :attr:`~hwcaps_fs.core.model.StatRecord.reachable_mode`),
less group's and others' write: whom the store keeps from listing a directory, the view keeps
too (else the names in it would leak), and nobody but its maker may write in one (without a
namespace the view sits on the host, and root follows its links). Its owner is its maker (root,
or the user running ``run`` in the rootless case), not the store directory's: the owner's bits
go to the maker, who has scanned the store anyway, and for the store directory's own owner and
group the view is stricter, never freer. Each directory is made ``0700`` and given its mode
once filled, so none is open to others before it is complete.

:func:`plan_symlink_view` is pure; :func:`write_symlink_view` does the I/O.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hwcaps_fs.core.access import PERMISSION_BITS
from hwcaps_fs.core.model import DirInfo
from hwcaps_fs.core.resolve import Resolution
from hwcaps_fs.system.namespaces import make_directory

#: The mode of a directory of the view while it is being filled: its maker's alone.
FILLING_MODE = stat.S_IRWXU


@dataclass(frozen=True)
class SymlinkView:
    """``top_mode``: the mode of the view's top directory; ``dirs``: the view's directories
    relative to its top (parents first, the top itself left out) with their modes; ``links``:
    each served relative path and the path, relative to ROOT, of the file it serves;
    ``verbatim``: relative paths and targets of the baseline symlinks, recreated exactly (see
    :attr:`~hwcaps_fs.core.model.Candidate.verbatim_link`)."""

    top_mode: int
    dirs: tuple[tuple[str, int], ...]
    links: tuple[tuple[str, str], ...]
    verbatim: tuple[tuple[str, str], ...] = ()


def directory_mode(info: DirInfo) -> int:
    """The mode of the view's directory for the merged directory ``info``: what the FUSE view
    shows, permission bits only, without group's and others' write."""
    return info.reachable_mode & PERMISSION_BITS & ~(stat.S_IWGRP | stat.S_IWOTH)


def plan_symlink_view(dirs: Mapping[str, DirInfo],
                      resolutions: Iterable[Resolution]) -> SymlinkView:
    """What to create for the view's directories ``dirs`` (the top, ``""``, among them) and
    names ``resolutions`` (those nothing serves are left out, as the mounted view leaves them
    out)."""
    # Sorting puts a directory before everything below it ("a" < "a-b" < "a/b").
    made = tuple((path, directory_mode(dirs[path])) for path in sorted(dirs) if path)
    served = sorted((resolution.relpath, resolution.served) for resolution in resolutions
                    if resolution.served is not None)
    links = tuple((relpath, c.source) for relpath, c in served if c.verbatim_link is None)
    verbatim = tuple((relpath, c.verbatim_link) for relpath, c in served
                     if c.verbatim_link is not None)
    return SymlinkView(directory_mode(dirs[""]), made, links, verbatim)


def write_symlink_view(view: SymlinkView, top: str, link_base: str) -> None:
    """Create ``view`` under the existing directory ``top``, with links to
    ``link_base/<source>`` (ROOT, or a private bind mount of it when ``top`` covers ROOT).
    ``top``'s own mode is the caller's to set (it may be DIR itself, or a tmpfs over it)."""
    for path, _ in view.dirs:
        make_directory(os.path.join(top, path), FILLING_MODE)
    for relpath, source in view.links:
        os.symlink(os.path.join(link_base, source), os.path.join(top, relpath))
    for relpath, target in view.verbatim:
        os.symlink(target, os.path.join(top, relpath))
    # Children first: a parent that its maker may no longer enter cannot stop them.
    for path, mode in reversed(view.dirs):
        os.chmod(os.path.join(top, path), mode)


def remove_symlink_view(top: str) -> None:
    """Remove everything under ``top``, every directory first made its remover's alone (one
    the view made without its owner's write bit could not be emptied by a non-root user)."""
    for entry in os.scandir(top):
        if entry.is_dir(follow_symlinks=False):
            os.chmod(entry.path, FILLING_MODE)
            remove_symlink_view(entry.path)
            os.rmdir(entry.path)
        else:
            os.unlink(entry.path)
