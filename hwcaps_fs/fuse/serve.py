"""Serving a mount: the daemon's state, its event loop, and how it ends.

The rules that keep the daemon from deadlocking on its own mount (docs/fuse.md):

* The daemon never resolves a path through its own mount. ROOT is opened as a directory fd
  before mounting and everything after goes through that fd; the working directory is ``/``;
  nothing is executed once the mount exists (for an in-place mount over /usr/bin, ``mount``,
  ``umount`` and ``fusermount3`` are behind the mount): mount(2) and umount2(2) are called
  through :mod:`hwcaps_fs.system.namespaces`. A daemon that looks up its own mountpoint
  deadlocks beyond ``kill -9``.
* An in-place mount reaches its real files through a private bind mount
  (:mod:`hwcaps_fs.system.bindmount`), made before mounting.
* An update never takes the mounted names away: a change that cannot be applied is logged and
  the previous view stays.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import resource
import signal
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import pyfuse3
import trio

from hwcaps_fs.core.level_views import level_views
from hwcaps_fs.core.loader_links import redirect_loader_links
from hwcaps_fs.core.model import Store
from hwcaps_fs.core.resolve import Resolution, Target, resolve_store
from hwcaps_fs.core.view import InodeNumbers, Presentation, View, build_view, is_privileged
from hwcaps_fs.detect.cpu import Detection, detect
from hwcaps_fs.errors import MountError, PathError, show
from hwcaps_fs.fuse import fastpath
from hwcaps_fs.fuse.backing import BackingFiles
from hwcaps_fs.fuse.operations import HwcapsOperations
from hwcaps_fs.store.scan import scan_fd
from hwcaps_fs.store.watch import Changes, Watcher, apply_changes
from hwcaps_fs.system.bindmount import bind_underlying, unbind
from hwcaps_fs.system.mountinfo import mounts_at, restrictions
from hwcaps_fs.system.namespaces import MS_NOEXEC
from hwcaps_fs.system.preflight import MountPaths

log = logging.getLogger(__name__)

#: How far the kernel reads ahead in a served file, in KiB (FUSE's default is 128): READs of
#: 1 MiB (libfuse's largest) instead of 128 KiB, several in flight, so that the daemon serves
#: the next while the reader copies the last (a cold 100 MB read: 8 times fewer requests).
READ_AHEAD_KB = 4096


# -- the daemon's state ------------------------------------------------------------------


@dataclass(frozen=True)
class Serving:
    """What a view serves, as the log at start and systemd's ``STATUS=`` say it."""

    root: str
    mountpoint: str
    level: str
    decided_by: str
    names: int
    #: How an exec reaches the served file, when a fast path can say (None: not said).
    exec_path: str | None = None

    def status(self) -> str:
        where = (self.mountpoint if self.root == self.mountpoint
                 else f"{self.root} at {self.mountpoint}")
        text = (f"serving {where}: level {self.level} (decided by {self.decided_by}), "
                f"{self.names} names")
        return text + (f", exec path: {self.exec_path}" if self.exec_path else "")


@dataclass
class _Daemon:
    """What the running daemon holds: the ROOT fd, the store, the view's inputs and the
    messages already logged (a rescan repeats the same skips; each is logged once)."""

    paths: MountPaths
    root_fd: int
    detection: Detection
    target: Target
    store: Store
    link_base: str | None
    numbers: InodeNumbers = field(default_factory=InodeNumbers)
    logged: set[str] = field(default_factory=set)

    def warn_once(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self.logged:
                self.logged.add(message)
                log.warning("%s", message)

    def serving(self) -> Serving:
        return Serving(self.paths.root, self.paths.mountpoint, self.detection.level,
                       self.detection.decided_by, len(self.store.files))

    def view(self) -> View:
        """Resolve the whole store and build the view (pure work, a few ms per thousand
        names; only scanning is incremental)."""
        resolutions = resolve_store(self.store, self.target)
        self.warn_once(self._skips(resolutions.values()))
        options = self.paths.config.options
        store, served = self.store, list(resolutions.values())
        if options.loader_links is not None:
            served = redirect_loader_links(served, options.loader_links)
        if options.levels_view:
            extra = level_views(self.store, self.target)
            self.warn_once([extra.warning] if extra.warning else [])
            store = dataclasses.replace(store, dirs={**store.dirs, **extra.dirs})
            served += extra.resolutions
        return build_view(store, served, presentation=options.presentation,
                          link_base=self.link_base, numbers=self.numbers)

    def _skips(self, resolutions: Iterable[Resolution]) -> list[str]:
        """Candidates refused at a level that was searched (a v4 build on a v3 CPU is no
        news, an untrusted or broken one is)."""
        searched = {*self.target.levels, None}
        messages = []
        for resolution in resolutions:
            messages += [f"{show(skip.candidate.path)}: skipped: {skip.reason}"
                         for skip in resolution.skipped if skip.candidate.level in searched]
        return messages

    def rebuild(self, watcher: Watcher, changes: Changes) -> View:
        """Rescan what ``changes`` touched and build the new view (blocking: in a thread)."""
        self.warn_once(watcher.sync())
        self.warn_once(apply_changes(self.store, self.root_fd, changes))
        if os.fstat(self.root_fd).st_nlink == 0:
            self.warn_once([f"ROOT {self.paths.root} was removed: the view stays empty until "
                            f"it is mounted again (hwcaps-fs umount {self.paths.mountpoint})"])
        return self.view()


def _open_root(root: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PathError(f"ROOT {root}: {exc.strerror}") from None


def _prepare(paths: MountPaths, root_fd: int) -> _Daemon:
    config, options = paths.config, paths.config.options
    is_root = os.geteuid() == 0
    detection = detect(config.detect_options)
    for message in detection.warnings:
        log.warning("%s", message)
    target = detection.target(require_trusted=options.serves_root())
    store = scan_fd(root_fd, paths.root, detection.architecture, config.layout)
    link_base: str | None = paths.root
    if paths.in_place:
        link_base = bind_underlying(root_fd, paths.mountpoint) if is_root else None
    daemon = _Daemon(paths, root_fd, detection, target, store, link_base)
    daemon.warn_once(store.warnings)
    if link_base is None and any(is_privileged(candidate) for found in store.files.values()
                                 for candidate in found.values()):
        log.warning("setuid/setgid/capability programs are served as plain files and lose "
                    "their privileges (an in-place mount needs root to present them as links)")
    return daemon


# -- serving -----------------------------------------------------------------------------


async def _stop_on_signals(stopped: list[int],
                           task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            stopped.append(signum)
            pyfuse3.terminate()
            return


async def _follow_changes(daemon: _Daemon, watcher: Watcher, ops: HwcapsOperations) -> None:
    """Apply the store's changes to the view. A change that cannot be applied is logged and
    the previous view stays: an update must never take the mounted names away."""
    while True:
        changes = await watcher.next_changes()
        if not (changes.changes or changes.overflow):
            continue
        try:
            view = await trio.to_thread.run_sync(daemon.rebuild, watcher, changes)
        except Exception as exc:
            log.error("cannot apply a change to %s (still serving the previous view): %r",
                      daemon.paths.root, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        await ops.swap(view)


async def _serve(daemon: _Daemon, watcher: Watcher, ops: HwcapsOperations,
                 ready: Callable[[Serving], None], stopped: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signals, stopped)
        nursery.start_soon(_follow_changes, daemon, watcher, ops)
        await pyfuse3.main()  # INIT first: then the mount serves (_initialized)
        nursery.cancel_scope.cancel()


def _raise_read_ahead(mountpoint: str, fstype: str) -> None:
    """Let the kernel read ahead :data:`READ_AHEAD_KB` of a served file (FUSE's default,
    128 KiB, makes a cold read of a large file one request per 128 KiB). Only once the INIT
    reply is in: the kernel lowers the read-ahead to what it says. The device is found
    through mountinfo: a stat of the mountpoint would be a request to ourselves."""
    mine = [entry for entry in mounts_at(mountpoint) if entry.fstype == fstype]
    if not mine:
        return
    path = f"/sys/class/bdi/{mine[-1].device}/read_ahead_kb"
    try:
        with open(path, "w", encoding="ascii") as file:
            file.write(f"{READ_AHEAD_KB}\n")
    except OSError as exc:
        log.debug("cannot set %s: %s", path, exc.strerror)


def _initialized(daemon: _Daemon, ready: Callable[[Serving], None], exec_path: str) -> None:
    """The kernel's INIT is being answered (in the event loop): the mount serves. One line
    says what it serves and what an exec through it costs (a warning when the fast path was
    meant to be on and is not), ``ready`` gets the same; the read-ahead is raised once the
    answer is in (the event loop's next turn)."""
    options = daemon.paths.config.options
    serving = replace(daemon.serving(), exec_path=exec_path)
    on = exec_path.startswith("zero-request") or not options.fastpath
    log.log(logging.INFO if on else logging.WARNING, "%s", serving.status())
    ready(serving)
    trio.lowlevel.current_trio_token().run_sync_soon(
        _raise_read_ahead, daemon.paths.mountpoint, f"fuse.{options.subtype}")


def _raise_file_limit() -> None:
    """One fd per file read since mounted can be open (see :mod:`hwcaps_fs.fuse.backing`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def _mounted(paths: MountPaths, ops: HwcapsOperations, root_fd: int) -> Iterator[list[int]]:
    """Mount ``ops``; on the way out unmount if we were stopped by a signal (an external
    unmount already did it) and tear the session down. The view is noexec when ROOT's own
    mount is (it is always nosuid and nodev): it never lets run what the real path does not."""
    options = paths.config.options.fuse_options()
    if restrictions(root_fd) & MS_NOEXEC:
        options.add("noexec")
    if not paths.config.options.fastpath:
        fastpath.disable()
    try:
        pyfuse3.init(ops, paths.mountpoint, options)
    except RuntimeError:
        raise MountError(f"cannot mount {paths.mountpoint}: libfuse refused "
                         "(its reason is on the line above)") from None
    stopped: list[int] = []
    try:
        yield stopped
    finally:
        still_mounted = any(entry.is_view for entry in mounts_at(paths.mountpoint))
        pyfuse3.close(unmount=bool(stopped) and still_mounted)


def serve(paths: MountPaths, ready: Callable[[Serving], None]) -> None:
    """Prepare, mount, serve until unmounted or signalled, clean up; ``ready`` is called once
    the mount serves, with what it serves."""
    os.chdir("/")
    _raise_file_limit()
    root_fd = _open_root(paths.root)
    daemon: _Daemon | None = None
    try:
        daemon = _prepare(paths, root_fd)
        backing = BackingFiles(root_fd)
        options = paths.config.options
        ops = HwcapsOperations(daemon.view(), backing, root_fd, xattrs=options.xattr,
                               symlinks=options.presentation is Presentation.SYMLINKS,
                               on_init=functools.partial(_initialized, daemon, ready))
        watcher = Watcher(root_fd)
        daemon.warn_once(watcher.sync())
        try:
            with _mounted(paths, ops, root_fd) as stopped:
                trio.run(_serve, daemon, watcher, ops, ready, stopped)
        finally:
            watcher.close()
            backing.close()
    finally:
        if daemon is not None and paths.in_place and daemon.link_base is not None:
            unbind(daemon.link_base)
        os.close(root_fd)
