"""The view materialized as a directory of symlinks: the fallback when FUSE cannot be used.

Inside a container without /dev/fuse or CAP_SYS_ADMIN the view cannot be mounted, but the CPU
is known when the container starts, so the view for *this* CPU can be written out once: every
served name becomes a symlink to the file it serves, every directory of the merged view a real
directory. Nothing follows changes to the store afterwards (a container's store does not
change), and privileged programs keep their privileges since the symlinks lead to the real
files. ``-o levels_view`` and ``-o loader_links`` make the names they make in the mounted view
(:mod:`hwcaps_fs.core.view_options`).

:func:`plan_symlink_view` is pure; :func:`write_symlink_view` does the I/O.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from hwcaps_fs.core.resolve import Resolution
from hwcaps_fs.system.namespaces import make_directory


@dataclass(frozen=True)
class SymlinkView:
    """``dirs``: the view's directories relative to its top (parents first, the top itself
    left out); ``links``: each served relative path and the path, relative to ROOT, of the
    file it serves; ``verbatim``: relative paths and targets of the baseline symlinks,
    recreated exactly (see :attr:`~hwcaps_fs.core.model.Candidate.verbatim_link`)."""

    dirs: tuple[str, ...]
    links: tuple[tuple[str, str], ...]
    verbatim: tuple[tuple[str, str], ...] = ()


def plan_symlink_view(dirs: Iterable[str], resolutions: Iterable[Resolution]) -> SymlinkView:
    """What to create for the view's directories ``dirs`` (the top is ``""``) and names
    ``resolutions`` (those nothing serves are left out, as the mounted view leaves them out)."""
    # Sorting puts a directory before everything below it ("a" < "a-b" < "a/b").
    made = tuple(sorted(path for path in dirs if path))
    served = sorted((resolution.relpath, resolution.served) for resolution in resolutions
                    if resolution.served is not None)
    links = tuple((relpath, c.source) for relpath, c in served if c.verbatim_link is None)
    verbatim = tuple((relpath, c.verbatim_link) for relpath, c in served
                     if c.verbatim_link is not None)
    return SymlinkView(made, links, verbatim)


def write_symlink_view(view: SymlinkView, top: str, link_base: str) -> None:
    """Create ``view`` under the existing directory ``top``, with links to
    ``link_base/<source>`` (ROOT, or a private bind mount of it when ``top`` covers ROOT)."""
    for path in view.dirs:
        make_directory(os.path.join(top, path), 0o755)
    for relpath, source in view.links:
        os.symlink(os.path.join(link_base, source), os.path.join(top, relpath))
    for relpath, target in view.verbatim:
        os.symlink(target, os.path.join(top, relpath))
