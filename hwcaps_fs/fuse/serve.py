"""Mounting, serving and unmounting: the process around :class:`~hwcaps_fs.fs.HwcapsOperations`.

The rules come from research/fuse.md §6.6 and §7, where breaking them was measured:

* The daemon never resolves a path through its own mount. ROOT is opened as a directory fd
  before mounting and everything after goes through that fd; the working directory is ``/``;
  nothing is executed once the mount exists (for an in-place mount over /usr/bin, ``mount``,
  ``umount`` and ``fusermount3`` are behind the mount): mount(2) and umount2(2) are called
  through ctypes. A daemon that looks up its own mountpoint deadlocks beyond ``kill -9``.
* Privileged programs are symlinks to the real file (see :mod:`hwcaps_fs.view`). When ROOT is
  the mountpoint, the real files are only reachable through a private read-only bind mount of
  the underlying directory, made under ``/run/hwcaps-fs`` before mounting. It keeps setuid (only
  the FUSE mount is nosuid) and is made private, or the FUSE mount would propagate onto it.
* ``mount`` returns only once the mount serves: mount(8) and mount.fuse3 wait for the command to
  exit, and what runs next at boot may exec through the mount. The daemon forks (twice, so no
  zombie is left to the caller) before anything is opened, mounts, starts the event loop, and
  only then tells the waiting parent over a pipe; a failure travels the same pipe as one line.
* A stale mount (a dead daemon: ENOTCONN) is detached before mounting, so a restart heals it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import logging.handlers
import os
import resource
import signal
import socket
import stat
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

import pyfuse3
import trio

from hwcaps_fs import cpu
from hwcaps_fs import store as stores
from hwcaps_fs.backing import BackingFiles
from hwcaps_fs.errors import HwcapsFsError, MountError, PathError, UsageError
from hwcaps_fs.fs import HwcapsOperations
from hwcaps_fs.mount_options import MountOptions
from hwcaps_fs.namespaces import MNT_DETACH, MS_BIND, MS_PRIVATE, MS_RDONLY, MS_REMOUNT, detach
from hwcaps_fs.namespaces import mount as sys_mount
from hwcaps_fs.namespaces import umount as sys_umount
from hwcaps_fs.resolve import Resolution, Target, resolve_store
from hwcaps_fs.view import InodeNumbers, Presentation, View, build_view, is_privileged
from hwcaps_fs.watch import Changes, Watcher, apply_changes

log = logging.getLogger(__name__)

#: Where the private bind mounts of in-place mounts live (one per mountpoint).
RUNTIME_DIR = "/run/hwcaps-fs"


#: The errno values of a FUSE mount whose daemon is gone.
STALE_ERRNOS = frozenset({errno.ENOTCONN, errno.ECONNABORTED})

#: Errors a failed daemon can report through the handshake pipe, by exit code.
HANDSHAKE_ERRORS: dict[int, type[HwcapsFsError]] = {
    error.exit_code: error for error in (UsageError, PathError, MountError)
}

@dataclass(frozen=True)
class MountConfig:
    """Everything ``hwcaps-fs mount`` was asked. ``layout`` None: detected from ROOT."""

    root: str
    mountpoint: str
    options: MountOptions
    detect_options: cpu.DetectOptions
    layout: stores.Layout | None
    foreground: bool


# -- mount table -------------------------------------------------------------------------


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo (the fields hwcaps-fs needs)."""

    mount_id: int
    mountpoint: str
    fstype: str
    source: str


def _unescape(text: str) -> str:
    r"""mountinfo writes space, tab, newline and backslash as ``\ooo`` octal escapes."""
    parts = text.split("\\")
    out = [parts[0]]
    for part in parts[1:]:
        code = part[:3]
        out.append(chr(int(code, 8)) + part[3:] if len(code) == 3 and code.isdigit()
                   else "\\" + part)
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """The mounts listed in mountinfo ``text``, in order (a later mount is on top)."""
    entries = []
    for line in text.splitlines():
        fields = line.split(" ")
        if "-" not in fields:
            continue
        separator = fields.index("-")
        entries.append(MountEntry(int(fields[0]), _unescape(fields[4]),
                                  fields[separator + 1], _unescape(fields[separator + 2])))
    return entries


def mounts_at(path: str) -> list[MountEntry]:
    """The mounts whose mountpoint is exactly ``path`` (absolute, not resolved), bottom first."""
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as file:
        return [entry for entry in parse_mountinfo(file.read()) if entry.mountpoint == path]


def _is_fuse(entry: MountEntry) -> bool:
    return entry.fstype == "fuse" or entry.fstype.startswith("fuse.")


# -- checks before mounting --------------------------------------------------------------


def _directory(path: str, role: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise PathError(f"{role} {path}: no such directory") from None
    except OSError as exc:
        raise PathError(f"{role} {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"{role} {path}: not a directory")
    return st


def _clear_stale_mount(mountpoint: str) -> None:
    """Detach a dead FUSE mount at ``mountpoint`` (its daemon died without auto_unmount)."""
    try:
        os.stat(mountpoint)
    except OSError as exc:
        if exc.errno in STALE_ERRNOS and any(map(_is_fuse, mounts_at(mountpoint))):
            log.warning("%s: clearing a stale mount (%s)", mountpoint, exc.strerror)
            detach(mountpoint)


@dataclass(frozen=True)
class Plan:
    """The checked paths of a mount: absolute ``mountpoint`` as given, canonical ``root``;
    ``in_place`` when ROOT is the mountpoint or below it (it is then only reachable through
    a bind mount once mounted)."""

    config: MountConfig
    mountpoint: str
    root: str
    in_place: bool


def plan(config: MountConfig) -> Plan:
    """Check ``config`` against the file system, clearing a stale mount on the way."""
    mountpoint = os.path.abspath(config.mountpoint)
    _clear_stale_mount(mountpoint)
    fstype = f"fuse.{config.options.subtype}"
    on_top = mounts_at(mountpoint)
    if on_top and on_top[-1].fstype == fstype:
        raise MountError(f"{mountpoint}: already mounted (hwcaps-fs umount {mountpoint})")
    _directory(mountpoint, "MOUNTPOINT")
    _directory(config.root, "ROOT")
    root, target = os.path.realpath(config.root), os.path.realpath(mountpoint)
    if root != target and target.startswith(root.rstrip("/") + "/"):
        raise PathError(f"MOUNTPOINT {mountpoint} is inside ROOT {root}: the daemon would "
                        "scan its own mount")
    in_place = root == target or root.startswith(target.rstrip("/") + "/")
    if in_place and os.geteuid() != 0 and config.options.presentation is Presentation.SYMLINKS:
        raise MountError("presentation=symlinks over ROOT itself needs root (a private bind "
                         "mount of ROOT is what the symlinks point into)")
    return Plan(config, mountpoint, root, in_place)


# -- the private bind mount --------------------------------------------------------------


def runtime_name(mountpoint: str) -> str:
    """A file name for ``mountpoint``, as systemd-escape --path writes it (``/usr/bin`` is
    ``usr-bin``), so that each mountpoint has its own bind mount and a restart finds it."""
    path = os.fsencode(mountpoint.strip("/"))
    safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_."
    escaped = "".join("-" if byte == ord("/") else chr(byte) if byte in safe
                      else f"\\x{byte:02x}" for byte in path)
    return escaped or "-"


def bind_underlying(root_fd: int, mountpoint: str) -> str:
    """Bind-mount the directory open as ``root_fd`` read-only (but not nosuid: setuid programs
    run from it) at ``RUNTIME_DIR/<name>``, private so the FUSE mount does not propagate onto
    it; a leftover from a daemon that was killed is detached first. Returns its path."""
    os.makedirs(RUNTIME_DIR, mode=0o755, exist_ok=True)
    target = os.path.join(RUNTIME_DIR, runtime_name(mountpoint))
    os.makedirs(target, mode=0o755, exist_ok=True)
    for _ in mounts_at(target):
        sys_umount(target, MNT_DETACH)
    sys_mount(f"/proc/self/fd/{root_fd}", target, None, MS_BIND)
    try:
        sys_mount(None, target, None, MS_PRIVATE)
        sys_mount(None, target, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
    except OSError:
        sys_umount(target, MNT_DETACH)
        raise
    return target


def unbind(target: str) -> None:
    try:
        sys_umount(target, MNT_DETACH)
        os.rmdir(target)
    except OSError as exc:
        log.warning("cannot remove the bind mount %s: %s", target, exc.strerror)


# -- the daemon's state ------------------------------------------------------------------


@dataclass
class _Daemon:
    """What the running daemon holds: the ROOT fd, the store, the view's inputs and the
    messages already logged (a rescan repeats the same skips; each is logged once)."""

    plan: Plan
    root_fd: int
    target: Target
    store: stores.Store
    link_base: str | None
    numbers: InodeNumbers = field(default_factory=InodeNumbers)
    logged: set[str] = field(default_factory=set)

    def warn_once(self, messages: list[str]) -> None:
        for message in messages:
            if message not in self.logged:
                self.logged.add(message)
                log.warning("%s", message)

    def view(self) -> View:
        """Resolve the whole store and build the view (pure work, a few ms per thousand
        names; only scanning is incremental)."""
        resolutions = resolve_store(self.store, self.target)
        self.warn_once(self._skips(resolutions.values()))
        options = self.plan.config.options
        return build_view(self.store, resolutions.values(), presentation=options.presentation,
                          link_base=self.link_base, numbers=self.numbers)

    def _skips(self, resolutions: Iterable[Resolution]) -> list[str]:
        """Candidates refused at a level that was searched (a v4 build on a v3 CPU is no
        news, an untrusted or broken one is)."""
        searched = {*self.target.levels, None}
        messages = []
        for resolution in resolutions:
            messages += [f"{skip.candidate.path}: skipped: {skip.reason}"
                         for skip in resolution.skipped if skip.candidate.level in searched]
        return messages

    def rebuild(self, watcher: Watcher, changes: Changes) -> View:
        """Rescan what ``changes`` touched and build the new view (blocking: in a thread)."""
        self.warn_once(watcher.sync())
        self.warn_once(apply_changes(self.store, self.root_fd, changes))
        if os.fstat(self.root_fd).st_nlink == 0:
            self.warn_once([f"ROOT {self.plan.root} was removed: the view stays empty until "
                            f"it is mounted again (hwcaps-fs umount {self.plan.mountpoint})"])
        return self.view()


def _open_root(root: str) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise PathError(f"ROOT {root}: {exc.strerror}") from None


def _prepare(plan: Plan, root_fd: int) -> _Daemon:
    config, options = plan.config, plan.config.options
    is_root = os.geteuid() == 0
    detection = cpu.detect(config.detect_options)
    for message in detection.warnings:
        log.warning("%s", message)
    target = detection.target(require_trusted=options.serves_root())
    store = stores.scan_fd(root_fd, plan.root, detection.architecture, config.layout)
    link_base: str | None = plan.root
    if plan.in_place:
        link_base = bind_underlying(root_fd, plan.mountpoint) if is_root else None
    daemon = _Daemon(plan, root_fd, target, store, link_base)
    daemon.warn_once(store.warnings)
    if link_base is None and any(is_privileged(candidate) for found in store.files.values()
                                 for candidate in found.values()):
        log.warning("setuid/setgid/capability programs are served as plain files and lose "
                    "their privileges (an in-place mount needs root to present them as links)")
    log.info("serving %s on %s at level %s", plan.root, plan.mountpoint, detection.level)
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
                      daemon.plan.root, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            continue
        await ops.swap(view)


async def _serve(daemon: _Daemon, watcher: Watcher, ops: HwcapsOperations,
                 ready: Callable[[], None], stopped: list[int]) -> None:
    async with trio.open_nursery() as nursery:
        await nursery.start(_stop_on_signals, stopped)
        nursery.start_soon(_follow_changes, daemon, watcher, ops)
        ready()
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def _raise_file_limit() -> None:
    """One fd per file read since mounted can be open (see :mod:`hwcaps_fs.backing`)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextlib.contextmanager
def _mounted(plan: Plan, ops: HwcapsOperations) -> Iterator[list[int]]:
    """Mount ``ops``; on the way out unmount if we were stopped by a signal (an external
    unmount already did it) and tear the session down."""
    try:
        pyfuse3.init(ops, plan.mountpoint, plan.config.options.fuse_options())
    except RuntimeError:
        raise MountError(f"cannot mount {plan.mountpoint}: libfuse refused "
                         "(its reason is on the line above)") from None
    stopped: list[int] = []
    try:
        yield stopped
    finally:
        still_mounted = any(entry.fstype == f"fuse.{plan.config.options.subtype}"
                            for entry in mounts_at(plan.mountpoint))
        pyfuse3.close(unmount=bool(stopped) and still_mounted)


def _run(plan: Plan, ready: Callable[[], None]) -> None:
    """Prepare, mount, serve until unmounted or signalled, clean up."""
    os.chdir("/")
    _raise_file_limit()
    root_fd = _open_root(plan.root)
    daemon: _Daemon | None = None
    try:
        daemon = _prepare(plan, root_fd)
        backing = BackingFiles(root_fd)
        ops = HwcapsOperations(daemon.view(), backing, root_fd,
                               xattrs=plan.config.options.xattr)
        watcher = Watcher(root_fd)
        daemon.warn_once(watcher.sync())
        try:
            with _mounted(plan, ops) as stopped:
                trio.run(_serve, daemon, watcher, ops, ready, stopped)
        finally:
            watcher.close()
            backing.close()
    finally:
        if daemon is not None and plan.in_place and daemon.link_base is not None:
            unbind(daemon.link_base)
        os.close(root_fd)


# -- the process -------------------------------------------------------------------------


def _log_to_stderr(level: int) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("hwcaps-fs[%(process)d]: %(levelname)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def _log_to_syslog() -> None:
    """After detaching, warnings go to syslog (journald's /dev/log), if there is one."""
    root = logging.getLogger()
    if not os.path.exists("/dev/log"):
        root.handlers[:] = [logging.NullHandler()]
        return
    handler = logging.handlers.SysLogHandler(
        "/dev/log", facility=logging.handlers.SysLogHandler.LOG_DAEMON)
    handler.setFormatter(logging.Formatter("hwcaps-fs[%(process)d]: %(message)s"))
    root.handlers[:] = [handler]


def notify(message: str) -> None:
    """Send ``message`` to systemd's $NOTIFY_SOCKET (sd_notify), if there is one."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall(message.encode())


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _daemon_child(plan: Plan, report: int) -> int:
    """The daemon process: serve, telling ``report`` ``ok`` once serving, or the error."""
    debug = plan.config.options.debug

    def ready() -> None:
        os.write(report, b"ok\n")
        os.close(report)
        if not debug:
            _detach_stdio()
            _log_to_syslog()

    try:
        _run(plan, ready)
    except HwcapsFsError as error:
        os.write(report, f"{error.exit_code}\t{error}\n".encode(errors="backslashreplace"))
        return error.exit_code
    except Exception as error:
        log.exception("hwcaps-fs daemon failed")
        with contextlib.suppress(OSError):
            os.write(report, f"{MountError.exit_code}\tinternal error: {error!r}\n".encode())
        return 70
    return 0


def _wait_for_daemon(report: int, mountpoint: str) -> None:
    chunks = []
    while chunk := os.read(report, 4096):
        chunks.append(chunk)
    os.close(report)
    answer = b"".join(chunks).decode(errors="replace").strip()
    if answer == "ok":
        return
    code, _, message = answer.partition("\t")
    if not message:
        raise MountError(f"cannot mount {mountpoint}: the daemon exited before serving")
    raise HANDSHAKE_ERRORS.get(int(code), MountError)(message)


def mount(config: MountConfig) -> None:
    """Mount ``config``: in the foreground, serve until unmounted (READY=1 to systemd once
    serving); else return once a detached daemon serves the mount.

    Logs go to stderr, then (once detached, unless ``debug``) to syslog: warnings, and in the
    foreground or with ``debug`` also what is served where.
    """
    quiet = not (config.foreground or config.options.debug)
    _log_to_stderr(logging.DEBUG if config.options.debug else
                   logging.WARNING if quiet else logging.INFO)
    checked = plan(config)
    if config.foreground:
        _run(checked, lambda: notify("READY=1"))
        notify("STOPPING=1")
        return
    report, child_report = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(report)
        os.setsid()
        if os.fork() == 0:
            code = _daemon_child(checked, child_report)
            logging.shutdown()
            os._exit(code)
        os._exit(0)
    os.close(child_report)
    os.waitpid(first, 0)
    _wait_for_daemon(report, checked.mountpoint)


def unmount(mountpoint: str) -> None:
    """Unmount the hwcaps-fs mount at ``mountpoint``; the daemon then exits by itself."""
    path = os.path.abspath(mountpoint)
    if not any(map(_is_fuse, mounts_at(path))):
        raise MountError(f"{path}: no hwcaps-fs mount there")
    if os.geteuid() != 0:
        detach(path)
        return
    try:
        sys_umount(path, 0)
    except OSError as exc:
        hint = f" ('umount -l {path}' detaches it anyway)" if exc.errno == errno.EBUSY else ""
        raise MountError(f"cannot unmount {path}: {exc.strerror}{hint}") from None
