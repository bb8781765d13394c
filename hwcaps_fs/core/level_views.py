"""Every level's view at once: ``.hwcaps/<level>/`` in a mount with ``-o levels_view``.

One mount can show, beside what this CPU is served, what a CPU at each lower level would be
served: ``.hwcaps/baseline/bin/foo``, ``.hwcaps/x86-64-v2/bin/foo``, ... each resolved with
the same rules as the view itself, capped at that level. That is how a packager tests the
fallbacks of a store (the x86-64-v2 build, and that a name a v2 machine would not see is
missing there) on a v4 machine, and runs each build by a stable path.

Only the baseline and the levels this CPU searches get a directory: a level above would serve
builds this CPU cannot run. The directory is a dot directory at the top of the view and exists
only with the option, so the default view of ``/usr/bin`` stays what the directory holds; a
store that has a ``.hwcaps`` entry of its own keeps it, and the levels view is left out.

Pure: the store and the target in, extra directories and resolutions for the view builder out.
"""

from __future__ import annotations

import dataclasses
import posixpath
from collections.abc import Iterable
from dataclasses import dataclass

from hwcaps_fs.core.model import DirInfo, Store
from hwcaps_fs.core.resolve import Resolution, Target, resolve

#: The directory, at the top of the view, that holds one subtree per level.
LEVELS_DIR = ".hwcaps"


@dataclass(frozen=True)
class LevelViews:
    """The directories (view relpath → info) and resolutions the levels view adds, or why it
    was left out (``warning``)."""

    dirs: dict[str, DirInfo]
    resolutions: tuple[Resolution, ...]
    warning: str | None = None


def level_names(target: Target) -> tuple[str, ...]:
    """The levels that get a subtree, lowest first: the baseline and every level searched."""
    return (target.architecture.baseline.name, *reversed(target.levels))


def is_taken(store: Store) -> bool:
    """Whether the store has a :data:`LEVELS_DIR` of its own (then there is no levels view)."""
    return LEVELS_DIR in store.files or LEVELS_DIR in store.dirs


def store_name(relpath: str) -> str:
    """The name of the store a path of the levels view serves (``bin/foo`` for
    ``.hwcaps/<level>/bin/foo``); any other path is its own."""
    parts = relpath.split("/", 2)
    return parts[2] if len(parts) == 3 and parts[0] == LEVELS_DIR else relpath


def level_paths(target: Target, relpaths: Iterable[str]) -> set[str]:
    """The paths of the levels view that serve the store's names ``relpaths``, at every level
    (``.hwcaps/<level>/bin/foo`` for ``bin/foo``: what :func:`store_name` undoes)."""
    return {posixpath.join(LEVELS_DIR, level, relpath)
            for level in level_names(target) for relpath in relpaths}


def level_views(store: Store, target: Target,
                relpaths: Iterable[str] | None = None) -> LevelViews:
    """What ``.hwcaps/<level>/`` adds to the view of ``store`` on ``target``: every directory,
    and the names ``relpaths`` (every name of the store when None) resolved at each level."""
    top = store.dirs.get("")
    taken = is_taken(store)
    if top is None or taken:
        why = f"{store.root}/{LEVELS_DIR} exists in the store: no levels view"
        return LevelViews({}, (), why if taken else None)
    dirs = {LEVELS_DIR: dataclasses.replace(top, path=LEVELS_DIR)}
    resolutions: list[Resolution] = []
    names = list(store.files if relpaths is None else relpaths)
    for level in level_names(target):
        prefix = posixpath.join(LEVELS_DIR, level)
        for relpath, info in store.dirs.items():
            where = posixpath.join(prefix, relpath) if relpath else prefix
            dirs[where] = dataclasses.replace(info, path=where)
        capped = target.capped(level)
        for relpath in names:
            resolution = resolve(relpath, store.candidates(relpath), capped)
            resolutions.append(dataclasses.replace(
                resolution, relpath=posixpath.join(prefix, relpath)))
    return LevelViews(dirs, tuple(resolutions))
