"""``hwcaps-fs mount`` and ``hwcaps-fs umount``."""

from __future__ import annotations

import errno
import gc
import logging
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from hwcaps_fs.errors import MountError
from hwcaps_fs.fuse.first_scan import ScanAhead
from hwcaps_fs.system.logs import log_to_stderr
from hwcaps_fs.system.mountinfo import mounts_at
from hwcaps_fs.system.namespaces import detach
from hwcaps_fs.system.namespaces import umount as sys_umount
from hwcaps_fs.system.preflight import MountConfig, MountLock, canonical, check_paths
from hwcaps_fs.system.process import notify, start_detached

if TYPE_CHECKING:
    from hwcaps_fs.fuse.serve import Serving


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
    lock = MountLock(canonical(config.mountpoint, "MOUNTPOINT"))
    try:
        paths = check_paths(config)
        with ScanAhead(paths) as scan:
            # Imported while the child scans: pyfuse3 and trio take as long as a scan of
            # 5,000 names, and the two CPUs of the smallest machine can do both at once.
            from hwcaps_fs.fuse.serve import serve

            # What the imports made lives as long as the process: frozen before the fork (as
            # gc advises), the cycle collector does not walk it again in the daemon.
            gc.freeze()

            if config.foreground:
                def ready(serving: Serving) -> None:
                    lock.release()
                    notify(f"READY=1\nSTATUS={serving.status()}")

                serve(paths, scan, ready)
                notify("STOPPING=1")
                return

            def daemon(ready: Callable[[], None]) -> None:
                lock.forget()
                serve(paths, scan, lambda serving: ready())

            start_detached(daemon, keep_stdio=config.options.debug, what=paths.mountpoint,
                           stderr_fallback=stderr_fallback)
    finally:
        lock.release()


def unmount(mountpoint: str) -> None:
    """Unmount the hwcaps-fs view at ``mountpoint`` (nothing else: not an sshfs mounted
    there); the daemon then exits by itself."""
    path = canonical(mountpoint, "MOUNTPOINT")
    on_top = mounts_at(path)
    if not on_top or not on_top[-1].is_view:
        there = f" (the mount there is {on_top[-1].fstype})" if on_top else ""
        raise MountError(f"{path}: no hwcaps-fs view there{there}")
    if os.geteuid() != 0:
        detach(path)
        return
    try:
        sys_umount(path, 0)
    except OSError as exc:
        hint = f" ('umount -l {path}' detaches it anyway)" if exc.errno == errno.EBUSY else ""
        raise MountError(f"cannot unmount {path}: {exc.strerror}{hint}") from None
