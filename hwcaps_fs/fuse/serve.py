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
import ctypes
import dataclasses
import functools
import gc
import logging
import os
import signal
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace

import pyfuse3
import trio

from hwcaps_fs.core.access import searchable_by_all
from hwcaps_fs.core.level_views import is_taken, level_paths, store_name
from hwcaps_fs.core.model import DirInfo, Store, locate, tree_roots
from hwcaps_fs.core.resolve import Resolution, Target, resolve, resolve_store
from hwcaps_fs.core.view import (
    InodeNumbers,
    Presentation,
    Update,
    View,
    build_view,
    diff,
    is_privileged,
    patch_view,
)
from hwcaps_fs.core.view_options import apply_view_options
from hwcaps_fs.detect.cpu import Detection
from hwcaps_fs.errors import MountError, show
from hwcaps_fs.fuse import fastpath
from hwcaps_fs.fuse.backing import (
    BackingFiles,
    descriptor_budget,
    grow_descriptor_table,
    raise_file_limit,
)
from hwcaps_fs.fuse.first_scan import ScanAhead
from hwcaps_fs.fuse.operations import HwcapsOperations
from hwcaps_fs.store.watch import Change, Changes, Watcher, apply_changes, has_variant_link
from hwcaps_fs.system.bindmount import bind_underlying, unbind
from hwcaps_fs.system.guard import Guard
from hwcaps_fs.system.libc import libc
from hwcaps_fs.system.mountinfo import mounts_at, restrictions, view_containing
from hwcaps_fs.system.namespaces import MS_NOEXEC
from hwcaps_fs.system.preflight import MountPaths

log = logging.getLogger(__name__)

#: How far the kernel reads ahead in a served file, in KiB (FUSE's default is 128): READs of
#: 1 MiB (libfuse's largest) instead of 128 KiB, several in flight, so that the daemon serves
#: the next while the reader copies the last (a cold 100 MB read: 8 times fewer requests).
READ_AHEAD_KB = 4096

#: How long a thread holds the GIL while another waits for it, in seconds (Python's default
#: is 0.005). Updates are pure Python in a worker thread; every request the event loop serves
#: meanwhile waits for the GIL, several times over: a lookup during the rebuilds of a
#: 15,000-name store waited 16 ms at p90 with the default, 4 ms with this.
SWITCH_INTERVAL = 0.0005

#: statfs' f_type of a FUSE file system (no inotify events for changes made behind it).
FUSE_SUPER_MAGIC = 0x65735546


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


#: How many distinct messages :class:`_Once` remembers (older ones may be logged again).
REMEMBERED_MESSAGES = 4096


class _Once:
    """Logs each warning once, remembering a bounded number of them (a store churned for
    months must not grow the daemon)."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __call__(self, messages: Iterable[str]) -> None:
        for message in messages:
            if message in self._seen:
                self._seen.move_to_end(message)
                continue
            self._seen[message] = None
            if len(self._seen) > REMEMBERED_MESSAGES:
                self._seen.popitem(last=False)
            log.warning("%s", message)


@dataclass
class _Daemon:
    """What the running daemon holds: the ROOT fd, the store, the view and its inputs, the
    skip messages of each name (logged when they first appear; forgotten with the name) and
    the names with variant links (rescanned on every change, see :mod:`hwcaps_fs.store.watch`)."""

    paths: MountPaths
    root_fd: int
    detection: Detection
    target: Target
    store: Store
    link_base: str | None
    numbers: InodeNumbers = field(default_factory=InodeNumbers)
    warn_once: _Once = field(default_factory=_Once)
    skips: dict[str, tuple[str, ...]] = field(default_factory=dict)
    links: set[str] = field(default_factory=set)
    current: View | None = None
    #: With ``loader_links`` and ``levels_view``: the mountpoint of the view DIR is in.
    loader_view: str | None = None
    #: Whether the store had a ``.hwcaps`` of its own at the last build (no levels view).
    levels_taken: bool = False

    def serving(self) -> Serving:
        return Serving(self.paths.root, self.paths.mountpoint, self.detection.level,
                       self.detection.decided_by, len(self.store.files))

    def view(self) -> View:
        """Resolve the whole store and build the view."""
        resolutions = resolve_store(self.store, self.target)
        self.skips = self._note(resolutions.values(), self.skips)
        self.links = {relpath for relpath, found in self.store.files.items()
                      if has_variant_link(found)}
        self.levels_taken = is_taken(self.store)
        dirs, served = self._served(list(resolutions.values()), None)
        self.current = build_view(dataclasses.replace(self.store, dirs=dirs), served,
                                  presentation=self.paths.config.options.presentation,
                                  link_base=self.link_base, numbers=self.numbers)
        return self.current

    def _served(self, resolutions: list[Resolution], relpaths: Iterable[str] | None,
                ) -> tuple[dict[str, DirInfo], list[Resolution]]:
        """The view's directories, and ``resolutions`` (of the names ``relpaths``, or of every
        name when None) with what the options make of them: links to the loader redirected,
        the names of the levels view."""
        applied = apply_view_options(self.store, self.target, resolutions,
                                     self.paths.config.options, self.loader_view, relpaths)
        self.warn_once(applied.warnings)
        return applied.dirs, applied.resolutions

    def _note(self, resolutions: Iterable[Resolution],
              known: dict[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
        """Log the skips of ``resolutions`` not in ``known`` (by path) and return the skips
        by path: candidates refused at a level that was searched (a v4 build on a v3 CPU is
        no news, an untrusted or broken one is)."""
        searched = {*self.target.levels, None}
        noted = {}
        for resolution in resolutions:
            messages = tuple(f"{show(skip.candidate.path)}: skipped: {skip.reason}"
                             for skip in resolution.skipped if skip.candidate.level in searched)
            if messages:
                noted[resolution.relpath] = messages
                old = known.get(resolution.relpath, ())
                for message in messages:
                    if message not in old:
                        log.warning("%s", message)
        return noted

    def update(self, watcher: Watcher, changes: Changes) -> Update:
        """Rescan what ``changes`` touched and bring the view up to date (blocking: in a
        thread). Costs what changed (and each directory, when directories did), unless
        everything had to be rescanned."""
        if changes.overflow:
            self.warn_once(watcher.sync())
        elif any(change.is_dir for change in changes.changes):
            self.warn_once(watcher.sync(change.path for change in changes.changes
                                        if change.is_dir))
        self._check_root(changes.root_moved)
        rescanned = apply_changes(self.store, self.root_fd, changes, self.links)
        self.warn_once(rescanned.warnings)
        old = self.current
        assert old is not None
        options = self.paths.config.options
        if rescanned.everything or (options.levels_view
                                    and is_taken(self.store) != self.levels_taken):
            return diff(old, self.view())
        resolutions = [resolve(relpath, self.store.candidates(relpath), self.target)
                       for relpath in rescanned.paths]
        for relpath in rescanned.paths:
            found = self.store.files.get(relpath)
            if found is not None and has_variant_link(found):
                self.links.add(relpath)
            else:
                self.links.discard(relpath)
        known = {relpath: self.skips.pop(relpath, ()) for relpath in rescanned.paths}
        self.skips.update(self._note(resolutions, known))
        dirs, served = self._served(resolutions, rescanned.paths)
        update = patch_view(old, served, presentation=options.presentation,
                            link_base=self.link_base, numbers=self.numbers,
                            dirs=dirs if rescanned.directories else None)
        self.current = update.view
        return update

    def _check_root(self, moved: bool) -> None:
        """If ROOT was removed (or ``moved``: renamed), say that the view keeps serving the
        directory it mounted (a mount follows a directory, not a path), and how to follow
        the new one."""
        how = f"hwcaps-fs umount {self.paths.mountpoint} and mount again to serve the new one"
        if os.fstat(self.root_fd).st_nlink == 0:
            self.warn_once([f"ROOT {self.paths.root} was removed: the view stays empty ({how})"])
        elif moved and not self.paths.in_place:
            self.warn_once([f"ROOT {self.paths.root} was renamed or replaced: the view goes on "
                            f"serving the directory it mounted ({how})"])


def _on_fuse(fd: int) -> bool:
    """Whether the directory open as ``fd`` is on a FUSE file system (fstatfs' f_type, the
    first field of struct statfs; os.fstatvfs does not give it)."""
    buffer = ctypes.create_string_buffer(256)
    if libc.fstatfs(fd, buffer) != 0:
        return False
    return ctypes.c_long.from_buffer(buffer).value == FUSE_SUPER_MAGIC


def _prepare(paths: MountPaths, scan: ScanAhead) -> _Daemon:
    options, root_fd = paths.config.options, scan.root_fd
    is_root = os.geteuid() == 0
    first = scan.result()
    detection, store = first.detection, first.store
    for message in detection.warnings:
        log.warning("%s", message)
    target = detection.target(require_trusted=options.serves_root())
    link_base, plain_because = _link_base(paths, root_fd, store, is_root)
    daemon = _Daemon(paths, root_fd, detection, target, store, link_base)
    daemon.warn_once(store.warnings)
    if options.loader_links is not None and options.levels_view:
        daemon.loader_view = view_containing(options.loader_links)
    if _on_fuse(root_fd):
        log.warning("ROOT %s is on a FUSE file system, which reports no changes: the view "
                    "follows it only when told (kill -HUP the daemon, or systemctl reload)",
                    paths.root)
    if link_base is None and any(is_privileged(candidate) for found in store.files.values()
                                 for candidate in found.values()):
        log.warning("setuid/setgid/capability programs are served as plain files and lose "
                    "their privileges (%s)", plain_because)
    return daemon


def _link_base(paths: MountPaths, root_fd: int, store: Store,
               is_root: bool) -> tuple[str | None, str]:
    """Where the symlinks of privileged programs lead (:func:`build_view`'s ``link_base``),
    or None and why they are plain files instead. An in-place view's lead into a bind mount
    of ROOT, which shows ROOT without the directories above it: so only where those keep
    nobody out (else the bind would let in whom they keep out)."""
    if paths.config.options.noexec:  # noexec holds only for plain files
        return None, "-o noexec: a link would run the real file"
    if not paths.in_place:
        return paths.root, ""
    if not is_root:
        return None, "an in-place mount needs root to present them as links"
    if not searchable_by_all(store.root_parents):
        return None, (f"a directory above {paths.root} keeps some users out, and the bind "
                      f"mount the links would lead into would not")
    return bind_underlying(root_fd, paths.mountpoint), ""


# -- serving -----------------------------------------------------------------------------


#: Signals that unmount and end the daemon: every signal sent from outside whose default
#: action ends a process (faults such as SIGSEGV excepted; Python ignores SIGPIPE and
#: SIGXFSZ), so that none leaves a dead mount. SIGHUP rescans the whole store instead (as
#: daemons reload their configuration on it: ``systemctl reload`` and ``kill -HUP``).
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2,
                signal.SIGALRM, signal.SIGVTALRM, signal.SIGPROF, signal.SIGIO, signal.SIGPWR,
                signal.SIGXCPU)


class _Updates:
    """Applies changes to the view one batch at a time, whoever asks: the inotify watcher,
    SIGHUP, or a lookup that found a name's file replaced (:meth:`refresh`)."""

    def __init__(self, daemon: _Daemon, watcher: Watcher, ops: HwcapsOperations) -> None:
        self.daemon, self._watcher, self._ops = daemon, watcher, ops
        self._lock = trio.Lock()

    async def apply(self, changes: Changes) -> None:
        """Apply ``changes``. One that cannot be applied is logged and the previous view
        stays: an update must never take the mounted names away."""
        async with self._lock:
            try:
                update = await trio.to_thread.run_sync(self.daemon.update, self._watcher,
                                                       changes)
                await self._ops.swap(update)
            except Exception as exc:
                log.error("cannot apply a change to %s (still serving the previous view): %r",
                          self.daemon.paths.root, exc, exc_info=log.isEnabledFor(logging.DEBUG))

    async def refresh(self, relpath: str) -> None:
        """Rescan the view path ``relpath`` now (its file was replaced under the view): the
        store's name it serves, ``bin/foo`` for ``.hwcaps/<level>/bin/foo``."""
        if self._levels_view():
            relpath = store_name(relpath)
        where = tree_roots(self.daemon.store.layout, self.daemon.store.architecture)
        paths = (f"{top}/{relpath}" if top else relpath for top in where.values())
        await self.apply(Changes(frozenset(Change(path, False) for path in paths)))

    async def follow(self) -> None:
        while True:
            changes = await self._watcher.next_changes(noticed=self._noticed)
            if changes.changes or changes.overflow:
                await self.apply(changes)

    def _levels_view(self) -> bool:
        """Whether the view has a levels view now (asked for, and the store has no
        ``.hwcaps`` of its own)."""
        return self.daemon.paths.config.options.levels_view and not self.daemon.levels_taken

    def _noticed(self, changes: Changes) -> None:
        """Changes seen, not applied yet (a burst is gathered first): the kernel forgets the
        names they touch whose files the daemon does not hold open, so that the next use
        looks them up (and a lookup of a replaced file rescans it) rather than reads a file
        that may be gone."""
        store = self.daemon.store
        located = (locate(store, change.path) for change in changes.changes
                   if not change.is_dir)
        relpaths = {where[1] for where in located if where is not None}
        if self._levels_view():  # the same names at each level
            relpaths |= level_paths(self.daemon.target, relpaths)
        self._ops.forget_unopened(relpaths)

    async def on_signals(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
                         ) -> None:
        with trio.open_signal_receiver(*STOP_SIGNALS, signal.SIGHUP) as signals:
            task_status.started()
            async for signum in signals:
                if signum == signal.SIGHUP:
                    log.info("SIGHUP: rescanning %s", self.daemon.paths.root)
                    await self.apply(Changes(frozenset(), overflow=True))
                    continue
                log.info("%s: unmounting", signal.Signals(signum).name)
                await self._ops.stop_forgetting()
                pyfuse3.terminate()
                return


async def _serve(updates: _Updates) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(updates.on_signals)
        nursery.start_soon(updates.follow)
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


@contextlib.contextmanager
def _mounted(paths: MountPaths, ops: HwcapsOperations, root_fd: int) -> Iterator[None]:
    """Mount ``ops``; on the way out, whatever ends the serving (a signal, an error), unmount
    if the mount is still there (an external unmount already removed it), so that the plain
    directory is back rather than a dead mount. The view is noexec when ROOT's own mount is
    (it is always nosuid and nodev): it never lets run what the real path does not."""
    options = paths.config.options.fuse_options()
    if restrictions(root_fd) & MS_NOEXEC:
        options.add("noexec")
    if not paths.config.options.fastpath:
        fastpath.disable()
    # before /dev/fuse is opened: the guard must not hold it (hwcaps_fs.system.guard)
    guard = Guard(paths.mountpoint) if paths.config.options.auto_unmount else None
    try:
        try:
            pyfuse3.init(ops, paths.mountpoint, options)
        except RuntimeError:
            raise MountError(f"cannot mount {paths.mountpoint}: libfuse refused "
                             "(its reason is on the line above)") from None
        if guard is not None:
            guard.mounted(paths.mountpoint)
        try:
            yield
        finally:
            ops.stop_forgetting_now()
            still_mounted = any(entry.is_view for entry in mounts_at(paths.mountpoint))
            pyfuse3.close(unmount=still_mounted)
    finally:
        if guard is not None:
            guard.close()


@contextlib.contextmanager
def _built_at_once() -> Iterator[None]:
    """Build the store and the view with the cycle collector paused, then freeze what was
    built: it lives as long as the view, and nothing in it refers back to itself, so reference
    counting frees what an update replaces. Otherwise the collector walks the growing heap
    again and again while nothing can be collected (1.5 s of 4 at 100,000 names). Then the
    heap's free pages go back to the system (the tables that building outgrew: 0.6 MB of
    the daemon's memory at 10,000 names)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        libc.malloc_trim(0)
        if enabled:
            gc.enable()


def serve(paths: MountPaths, scan: ScanAhead, ready: Callable[[Serving], None]) -> None:
    """Prepare (from ``scan``, which holds the ROOT fd), mount, serve until unmounted or
    signalled, clean up; ``ready`` is called once the mount serves, with what it serves."""
    os.chdir("/")
    raise_file_limit()
    sys.setswitchinterval(SWITCH_INTERVAL)
    root_fd = scan.root_fd
    daemon: _Daemon | None = None
    try:
        with _built_at_once():
            daemon = _prepare(paths, scan)
            view = daemon.view()
        backing = BackingFiles(root_fd, descriptor_budget())
        grow_descriptor_table(root_fd, backing.budget)
        watcher = Watcher(root_fd)
        updates: _Updates
        options = paths.config.options
        ops = HwcapsOperations(view, backing, root_fd, xattrs=options.xattr,
                               refresh=lambda relpath: updates.refresh(relpath),
                               symlinks=options.presentation is Presentation.SYMLINKS,
                               on_init=functools.partial(_initialized, daemon, ready))
        updates = _Updates(daemon, watcher, ops)
        daemon.warn_once(watcher.sync())
        try:
            with _mounted(paths, ops, root_fd):
                trio.run(_serve, updates)
        finally:
            watcher.close()
            backing.close()
    finally:
        if daemon is not None and paths.in_place and daemon.link_base is not None:
            unbind(daemon.link_base)
