"""``hwcaps-fs mount`` and ``hwcaps-fs umount``."""

from __future__ import annotations

import errno
import logging
import os

from hwcaps_fs.errors import MountError
from hwcaps_fs.fuse.serve import serve
from hwcaps_fs.system.logs import log_to_stderr
from hwcaps_fs.system.mountinfo import mounts_at
from hwcaps_fs.system.namespaces import detach
from hwcaps_fs.system.namespaces import umount as sys_umount
from hwcaps_fs.system.preflight import MountConfig, check_paths
from hwcaps_fs.system.process import notify, start_detached


def mount(config: MountConfig, *, stderr_fallback: bool = False) -> None:
    """Mount ``config``: in the foreground, serve until unmounted (READY=1 and STATUS= to
    systemd once serving); else return once a detached daemon serves the mount.

    Logs go to stderr, then (once detached, unless ``debug``) to syslog, or where there is
    none and ``stderr_fallback`` is set, to the stderr the daemon started with: warnings, and
    in the foreground or with ``debug`` also what is served where.
    """
    quiet = not (config.foreground or config.options.debug)
    log_to_stderr(logging.DEBUG if config.options.debug else
                  logging.WARNING if quiet else logging.INFO)
    paths = check_paths(config)
    if config.foreground:
        serve(paths, lambda serving: notify(f"READY=1\nSTATUS={serving.status()}"))
        notify("STOPPING=1")
        return
    start_detached(lambda ready: serve(paths, lambda serving: ready()),
                   keep_stdio=config.options.debug, what=paths.mountpoint,
                   stderr_fallback=stderr_fallback)


def unmount(mountpoint: str) -> None:
    """Unmount the hwcaps-fs mount at ``mountpoint``; the daemon then exits by itself."""
    path = os.path.abspath(mountpoint)
    if not any(entry.is_fuse for entry in mounts_at(path)):
        raise MountError(f"{path}: no hwcaps-fs mount there")
    if os.geteuid() != 0:
        detach(path)
        return
    try:
        sys_umount(path, 0)
    except OSError as exc:
        hint = f" ('umount -l {path}' detaches it anyway)" if exc.errno == errno.EBUSY else ""
        raise MountError(f"cannot unmount {path}: {exc.strerror}{hint}") from None
