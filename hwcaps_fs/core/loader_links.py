"""Systems packaged for hwcaps-loader, served without repackaging: ``-o loader_links=DIR``.

Such a system (Solus, for one) ships ``/usr/bin/foo -> hwcaps-loader`` and the builds in
``/usr/hwcaps/<level>/bin/foo``, the baseline in ``/usr/hwcaps/x86-64-v1/``. hwcaps-fs serves
``/usr/hwcaps`` as a store of the loader layout; mounted at DIR's parent, ``DIR/foo`` is the
best build of ``bin/foo`` for this CPU, with glibc's rules. The in-place view of ``/usr/bin``
with this option then shows each link to ``hwcaps-loader`` as a link to ``DIR/<name>``: the
kernel goes straight to the served build, and the loader is no longer run (its argv[0]
resolution, its CPUID rules and its exec are out of the path). The packages stay as they are,
and the loader keeps working for anything that calls it outside the view.

Pure: resolutions in, resolutions out.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Callable, Iterable

from hwcaps_fs.core.level_views import LEVELS_DIR
from hwcaps_fs.core.resolve import Resolution

#: The file name that marks a link as one to the loader (any directory: ``hwcaps-loader``,
#: ``/usr/bin/hwcaps-loader``).
LOADER_NAME = "hwcaps-loader"


def is_loader_link(target: str) -> bool:
    return posixpath.basename(target.rstrip("/")) == LOADER_NAME


def redirect_loader_links(resolutions: Iterable[Resolution],
                          target: Callable[[str], str]) -> list[Resolution]:
    """``resolutions`` with every served baseline symlink to the loader pointing at
    ``target(relpath)`` instead (the loader itself, a file, is left as it is)."""
    redirected = []
    for resolution in resolutions:
        served = resolution.served
        link = served.verbatim_link if served is not None else None
        if served is not None and link is not None and is_loader_link(link):
            resolution = dataclasses.replace(resolution, served=dataclasses.replace(
                served, link_target=target(resolution.relpath)))
        redirected.append(resolution)
    return redirected


def into(directory: str) -> Callable[[str], str]:
    """The targets of the view's own names: ``directory/<relpath>``."""
    return lambda relpath: posixpath.join(directory, relpath)


def into_levels(view_root: str, directory: str) -> Callable[[str], str]:
    """The targets of the names of ``.hwcaps/<level>/`` (``-o levels_view``): the same name
    in the levels view of the view of ``/usr/hwcaps`` that ``directory`` is in, mounted at
    ``view_root`` (with ``-o levels_view`` too): what a CPU at that level is served there.
    The loader picks by CPUID, and ``directory`` serves this CPU's build."""
    below = posixpath.relpath(directory, view_root)

    def target(relpath: str) -> str:
        _levels, level, name = relpath.split("/", 2)
        return posixpath.normpath(posixpath.join(view_root, LEVELS_DIR, level, below, name))

    return target
