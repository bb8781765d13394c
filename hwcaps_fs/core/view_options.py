"""What the ``-o`` options that change names make of a resolved store: links to hwcaps-loader
redirected (``loader_links``, :mod:`hwcaps_fs.core.loader_links`) and the
``.hwcaps/<level>/`` subtrees (``levels_view``, :mod:`hwcaps_fs.core.level_views`).

One function for every view that honours them: ``hwcaps-fs run``'s symlink fallback, and
the FUSE daemon (the whole store at start, the touched names at each update).

Pure: the store, the target and resolutions in; directories, resolutions and warnings out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hwcaps_fs.core.level_views import LEVELS_DIR, level_views
from hwcaps_fs.core.loader_links import into, into_levels, redirect_loader_links
from hwcaps_fs.core.model import DirInfo, Store
from hwcaps_fs.core.mount_options import MountOptions
from hwcaps_fs.core.resolve import Resolution, Target


@dataclass(frozen=True)
class OptionsApplied:
    """The view's directories (the store's, and the levels view's), what it serves, and
    what the user should hear about it."""

    dirs: dict[str, DirInfo]
    resolutions: list[Resolution]
    warnings: tuple[str, ...]


def apply_view_options(store: Store, target: Target, resolutions: Iterable[Resolution],
                       options: MountOptions, loader_view: str | None,
                       relpaths: Iterable[str] | None = None) -> OptionsApplied:
    """``resolutions`` (of the names ``relpaths``, or of every name of ``store`` when None)
    with what ``options`` make of them. ``loader_view``: with ``loader_links`` and
    ``levels_view``, the mountpoint of the view the ``loader_links`` directory is in
    (:func:`~hwcaps_fs.system.mountinfo.view_containing`), None when it is in none."""
    dirs, served = store.dirs, list(resolutions)
    warnings: list[str] = []
    if options.loader_links is not None:
        served = redirect_loader_links(served, into(options.loader_links))
    if options.levels_view:
        extra = level_views(store, target, relpaths)
        warnings.extend([extra.warning] if extra.warning else [])
        dirs = {**dirs, **extra.dirs}
        levels = list(extra.resolutions)
        if options.loader_links is not None and loader_view is not None:
            levels = redirect_loader_links(levels, into_levels(loader_view,
                                                               options.loader_links))
        elif options.loader_links is not None:
            warnings.append(f"loader_links {options.loader_links} is in no hwcaps-fs view: "
                            f"the links to hwcaps-loader under {LEVELS_DIR}/ run the loader, "
                            "which picks by CPUID, not by level")
        served.extend(levels)
    return OptionsApplied(dirs, served, tuple(warnings))
