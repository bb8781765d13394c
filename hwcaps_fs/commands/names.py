"""What a RELPATH argument of ``which`` and ``compare`` names in a store: a path relative to
ROOT or an absolute path inside it, or one clear error."""

from __future__ import annotations

import os
import posixpath

from hwcaps_fs.core.model import Store, locate
from hwcaps_fs.errors import PathError, show


def view_relpath(store: Store, given: str) -> str:
    """The name in the view that ``given`` (a command-line argument) means: a path relative to
    ROOT, or an absolute path inside ROOT (a variant's own path names its view name).

    Raises :class:`~hwcaps_fs.errors.PathError` when it is outside ROOT or names nothing in the
    store, with a hint when a file of that name exists elsewhere (``hwcaps-demo`` for
    ``bin/hwcaps-demo``).
    """
    relpath = given.strip("/")
    if given.startswith("/"):
        root = store.root.rstrip("/")
        real = os.path.realpath(posixpath.dirname(given.rstrip("/")))
        inside = posixpath.join(real, posixpath.basename(given.rstrip("/")))
        if inside != root and not inside.startswith(root + "/"):
            raise PathError(f"{show(given)} is not inside {show(store.root)}")
        where = locate(store, inside[len(root) + 1 :])
        relpath = where[1] if where is not None else ""
    if relpath in store.files:
        return relpath
    if relpath in store.dirs:
        raise PathError(f"{show(given)}: a directory in {show(store.root)}, not a program")
    alike = sorted(name for name in store.files if posixpath.basename(name) == relpath)
    hint = f" (did you mean {', '.join(show(name) for name in alike[:3])}?)" if alike else ""
    raise PathError(f"{show(given)}: no such name in {show(store.root)}{hint}")
