"""``hwcaps-fs run``: make the view appear, then become the command (a container entrypoint).

One image can carry several builds of a program, but which one is best is only known on the
node where the container lands. ``hwcaps-fs run --root ROOT --mountpoint DIR -- CMD...`` makes
the view of ROOT for this CPU appear at DIR and then *execs* CMD: CMD keeps the process (PID 1
in a container), receives the signals sent to it, and its exit status is the container's.

The processes::

    hwcaps-fs run ──exec──> CMD                 same pid: signals and exit status are CMD's
        └── keeper          own session, child subreaper, SIGTERM when CMD ends
              └── daemon    hwcaps_fs.commands.mount (double-forked, so adopted by the keeper)

Why a keeper: once CMD has replaced us nothing of hwcaps-fs is left to remove the view when
CMD ends, and the daemon would not end by itself, because it sits in the mount namespace it
serves and so keeps that namespace, and the mount, alive. The keeper does the whole setup (so
the daemon descends from it, in its own session: a Ctrl-C meant for CMD does not unmount the
view under CMD's feet), reports the outcome through a pipe, then sleeps until the kernel says
CMD has ended (``PR_SET_PDEATHSIG``, which an exec does not trigger). It then detaches the
view, waits for the daemon to finish (its session ends with the mount; SIGTERM, then SIGKILL
past a grace period) and removes what it created. The parent-death signal follows the thread
that forked the keeper, which is CMD's main thread: a CMD that ends its main thread early
(``pthread_exit``) and goes on in others loses the view then.

In a container where CMD is PID 1 the keeper and the daemon are CMD's children; they never
exit while CMD runs, so CMD has nothing to reap, and when CMD exits the kernel kills the whole
PID namespace. No ``--init`` is needed on hwcaps-fs's account.

The mounts are made in a private mount namespace when one can be had (``unshare``: as root,
or inside a new user namespace for other users), so nothing leaks to the host and nothing is
left behind even if everything is killed. Without FUSE (no /dev/fuse, no CAP_SYS_ADMIN, a
seccomp filter), the view for this CPU is written out as symlinks
(:mod:`hwcaps_fs.commands.symlink_view`) on a tmpfs over DIR when the namespace is private, else
into DIR if it is empty; one line on stderr says so, and CMD runs all the same.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from typing import NoReturn

from hwcaps_fs.commands.symlink_view import (
    FILLING_MODE,
    plan_symlink_view,
    remove_symlink_view,
    write_symlink_view,
)
from hwcaps_fs.core.model import Layout
from hwcaps_fs.core.mount_options import NOEXEC_THROUGH_LINKS, MountOptions
from hwcaps_fs.core.resolve import resolve_store
from hwcaps_fs.core.view_options import apply_view_options
from hwcaps_fs.detect.cpu import DetectOptions, detect
from hwcaps_fs.errors import (
    CommandNotExecutableError,
    CommandNotFoundError,
    MountError,
    PathError,
    UsageError,
    show,
)
from hwcaps_fs.store.scan import scan
from hwcaps_fs.system import handshake, namespaces
from hwcaps_fs.system.mountinfo import view_containing
from hwcaps_fs.system.namespaces import Isolation
from hwcaps_fs.system.preflight import (
    MountConfig,
    canonical,
    check_loader_links,
    check_mountpoint,
)

#: Set for CMD to the view's directory when no ``--mountpoint`` was given (it has no other
#: way to know where the private directory is). Nothing else in CMD's environment changes.
VIEW_VARIABLE = "HWCAPS_FS_VIEW"

#: Where private directories go when they can (a tmpfs on most systems), else $TMPDIR.
RUNTIME_PARENT = "/run"
PRIVATE_PREFIX = "hwcaps-fs-run."

#: The FUSE device, and what it must be (a bind of /dev/null over it opens fine).
FUSE_DEVICE = "/dev/fuse"
FUSE_RDEV = os.makedev(10, 229)

#: Seconds the daemon gets to end after the view is detached, then after SIGTERM.
DAEMON_GRACE_SECONDS = 2.0
POLL_SECONDS = 0.02

#: Signals Python ignores for itself; an ignored disposition survives exec, CMD gets defaults.
PYTHON_IGNORED_SIGNALS = (signal.SIGPIPE, signal.SIGXFSZ)


@dataclass(frozen=True)
class RunConfig:
    """What ``hwcaps-fs run`` was asked. ``mountpoint`` None: a private directory, told to
    CMD in $HWCAPS_FS_VIEW. ``command`` is CMD and its arguments, looked up in $PATH."""

    root: str
    mountpoint: str | None
    command: list[str]
    detect_options: DetectOptions
    mount_options: MountOptions
    layout: Layout | None


def run(config: RunConfig) -> NoReturn:
    """Make the view appear, then exec CMD. Raises :class:`UsageError` without a command,
    :class:`PathError` for a bad ROOT or DIR, :class:`CommandNotFoundError` (127) and
    :class:`CommandNotExecutableError` (126) for CMD; never returns otherwise."""
    if not config.command:
        raise UsageError("run: no command given (hwcaps-fs run --root ROOT -- CMD [ARGS...])")
    # The keeper works from "/", so every path it gets is made absolute here.
    mountpoint = (None if config.mountpoint is None
                  else canonical(config.mountpoint, "MOUNTPOINT"))
    config = replace(config, root=canonical(config.root, "ROOT"),
                     mountpoint=mountpoint)
    isolation = namespaces.isolate()
    view = _start_keeper(config, isolation)
    environ = dict(os.environ)
    if mountpoint is None:
        environ[VIEW_VARIABLE] = view
    _become(config.command, environ, view)


#: Where in the view a command name is looked for when PATH does not have it.
VIEW_BIN_DIRS = ("bin", "sbin")


def _become(command: list[str], environ: dict[str, str], view: str) -> NoReturn:
    """Exec ``command``, looked up in the caller's PATH now that the view is there, else (a
    name, not a path) in the view's bin directories: ``run --root ROOT -- NAME`` runs ROOT's
    NAME whether or not PATH names the view."""
    name = command[0]
    path = shutil.which(name, path=environ.get("PATH", os.defpath))
    if path is None and os.sep not in name:
        in_view = os.pathsep.join(os.path.join(view, sub) for sub in VIEW_BIN_DIRS)
        path = shutil.which(name, path=in_view)
    if path is None:
        raise CommandNotFoundError(f"run: command not found: {name} (looked in PATH and in "
                                   f"the view's {' and '.join(d + '/' for d in VIEW_BIN_DIRS)})")
    for signum in PYTHON_IGNORED_SIGNALS:
        signal.signal(signum, signal.SIG_DFL)
    try:
        os.execve(path, command, environ)
    except OSError as exc:
        raise CommandNotExecutableError(f"run: cannot execute {name}: {exc.strerror}") from None


# -- the parent's side of the keeper ----------------------------------------------------------


def _start_keeper(config: RunConfig, isolation: Isolation) -> str:
    """Fork the keeper and wait for its word: the view's directory, or the error to raise."""
    parent = os.getpid()
    from_child, to_parent = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        os.close(from_child)
        _keeper(config, isolation, parent, to_parent)
    os.close(to_parent)
    outcome = handshake.receive(from_child)
    if isinstance(outcome, str):
        return outcome
    os.waitpid(pid, 0)
    if not isinstance(outcome, BaseException):
        raise MountError("run: the view could not be prepared (the helper process died)")
    raise outcome


# -- the keeper --------------------------------------------------------------------------


def _keeper(config: RunConfig, isolation: Isolation, parent: int, to_parent: int) -> NoReturn:
    """The keeper process: set the view up, report, wait for CMD's end, clean up, exit."""
    reported = False
    try:
        os.setsid()
        os.chdir("/")
        _quiet_stdio()
        namespaces.become_subreaper()
        with contextlib.ExitStack() as cleanup:
            outcome: str | BaseException
            try:
                outcome = _prepare_view(config, isolation, cleanup)
            except BaseException as error:
                outcome = error
            handshake.send(to_parent, outcome)
            reported = True
            if isinstance(outcome, str):
                _wait_for_parent(parent)
    except BaseException as error:
        if not reported:
            with contextlib.suppress(OSError):
                handshake.send(to_parent, error)
        else:
            print(f"hwcaps-fs: run: removing the view: {error}", file=sys.stderr, flush=True)
        os._exit(1)
    os._exit(0)


def _quiet_stdio() -> None:
    """CMD owns stdin and stdout; the keeper keeps stderr for the fallback line."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        os.dup2(null, fd)
    os.close(null)


def _wait_for_parent(parent: int) -> None:
    """Sleep until CMD (our parent, after its exec) ends, or someone sends us SIGTERM."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    namespaces.set_parent_death_signal(signal.SIGTERM)
    if os.getppid() == parent:
        signal.sigwait({signal.SIGTERM})


def _prepare_view(config: RunConfig, isolation: Isolation,
                  cleanup: contextlib.ExitStack) -> str:
    """Make the view appear (FUSE, else symlinks); every undo goes on ``cleanup``."""
    top = _directory(config.mountpoint, cleanup)
    reason = _fuse_unavailable()
    if reason is None:
        try:
            _mount_fuse(config, top, cleanup)
            return top
        except (MountError, OSError) as exc:
            reason = str(exc)
    _refuse_unhonoured(config.mount_options, reason)
    _serve_symlinks(config, isolation, top, cleanup)
    print(show(f"hwcaps-fs: FUSE unavailable ({reason}): serving a symlink view of "
               f"{config.root} in {top}"), file=sys.stderr, flush=True)
    return top


def _fuse_unavailable() -> str | None:
    """Why FUSE cannot be used here, when that shows before trying (no usable device)."""
    try:
        fd = os.open(FUSE_DEVICE, os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        return f"{FUSE_DEVICE}: {exc.strerror}"
    try:
        rdev = os.fstat(fd).st_rdev
    finally:
        os.close(fd)
    return None if rdev == FUSE_RDEV else f"{FUSE_DEVICE} is not the FUSE device"


def _private_directory(cleanup: contextlib.ExitStack, mode: int = 0o755) -> str:
    """A new directory of mode ``mode`` (by default everyone's: CMD may drop privileges, and
    the view is for everyone it runs as), removed again."""
    parent = RUNTIME_PARENT if os.access(RUNTIME_PARENT, os.W_OK) else None
    path = tempfile.mkdtemp(prefix=PRIVATE_PREFIX, dir=parent)
    os.chmod(path, mode)
    cleanup.callback(os.rmdir, path)
    return path


def _directory(mountpoint: str | None, cleanup: contextlib.ExitStack) -> str:
    """The view's directory: DIR (created if missing, removed again), or a private one."""
    if mountpoint is None:
        return _private_directory(cleanup)
    try:
        namespaces.make_directory(mountpoint, 0o755)
    except FileExistsError:
        if not os.path.isdir(mountpoint):
            raise PathError(f"MOUNTPOINT {mountpoint}: not a directory") from None
        return mountpoint
    except OSError as exc:
        raise PathError(f"MOUNTPOINT {mountpoint}: {exc.strerror}") from None
    cleanup.callback(os.rmdir, mountpoint)
    return mountpoint


def _mount_fuse(config: RunConfig, top: str, cleanup: contextlib.ExitStack) -> None:
    from hwcaps_fs.commands.mount import mount

    cleanup.callback(_end_children)  # also reaps a daemon that failed to mount
    mount(MountConfig(root=config.root, mountpoint=top, options=config.mount_options,
                      detect_options=config.detect_options, layout=config.layout,
                      foreground=False), stderr_fallback=True)
    cleanup.callback(namespaces.detach, top)


def _children() -> list[int]:
    path = f"/proc/self/task/{os.getpid()}/children"
    try:
        with open(path, encoding="ascii") as file:
            return [int(pid) for pid in file.read().split()]
    except FileNotFoundError:  # a kernel without CONFIG_PROC_CHILDREN
        return []


def _reaped_all(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return True
        if pid == 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)


def _end_children() -> None:
    """Wait for the daemon, which ends once its mount is gone; then make it."""
    for signum in (None, signal.SIGTERM, signal.SIGKILL):
        if signum is not None:
            for pid in _children():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        if _reaped_all(DAEMON_GRACE_SECONDS):
            return


# -- the fallback: a symlink view --------------------------------------------------------


#: The ``-o`` options a symlink view cannot honour, and why: each restricts what a user may
#: run or read, so the fallback refuses it rather than serve a view freer than asked. The
#: others are honoured: ``level``, ``layout``, ``levels_view``, ``loader_links``,
#: ``presentation=symlinks``, ``allow_other`` (the links are everyone's, and the kernel follows
#: them with the caller's rights into ROOT), and ``ro``, ``nosuid``, ``nodev`` and
#: ``default_permissions`` as on the mount (a read-only nosuid, nodev tmpfs in a private
#: namespace). Or they mean nothing where no daemon answers: ``auto_unmount`` (the keeper
#: removes the view), ``debug``, ``fsname``, ``subtype``, ``xattr`` (through a link, the
#: attributes are the file's own in ROOT), ``fastpath``, and ``presentation=files``, the
#: default (the fallback's line on stderr says the view is symlinks).
UNHONOURED = {"noexec": NOEXEC_THROUGH_LINKS}


def _refuse_unhonoured(options: MountOptions, reason: str) -> None:
    """Raise :class:`UsageError` for the first option asked that :data:`UNHONOURED` lists."""
    for name, why in UNHONOURED.items():
        if getattr(options, name):
            raise UsageError(f"run: -o {name} cannot be honoured without FUSE ({reason}): "
                             f"{why}")


def _covers(top: str, root: str) -> bool:
    top, root = os.path.realpath(top), os.path.realpath(root)
    return root == top or root.startswith(top.rstrip("/") + "/")


def _borrow(top: str, mode: int, cleanup: contextlib.ExitStack) -> int:
    """Take the empty DIR ``top`` for a symlink view written straight into it: its owner's
    alone while it fills; the mode it gets then (its own, less what ``mode``, the view's top,
    would not allow: a DIR others may list must not show them the names of a ROOT they may
    not) is returned. ``cleanup`` empties it, then gives it its own mode back."""
    own = stat.S_IMODE(os.stat(top).st_mode)
    try:
        os.chmod(top, own & FILLING_MODE)
    except OSError as exc:
        raise MountError(f"cannot serve a symlink view in {top}: cannot change its mode to "
                         f"keep others out as ROOT does ({exc.strerror})") from None
    cleanup.callback(_give_back, top, own)
    return own & mode


def _give_back(top: str, own: int) -> None:
    """Empty the borrowed DIR ``top`` (its owner's alone meanwhile), then give it its own
    mode ``own`` back."""
    os.chmod(top, own & FILLING_MODE)
    remove_symlink_view(top)
    os.chmod(top, own)


def _mount_private(source: str | None, target: str, fstype: str | None, flags: int,
                   data: str | None = None) -> None:
    try:
        namespaces.mount(source, target, fstype, flags, data)
    except OSError as exc:
        raise MountError(f"cannot mount {fstype or source} on {target}: {exc.strerror}") \
            from None


def _serve_symlinks(config: RunConfig, isolation: Isolation, top: str,
                    cleanup: contextlib.ExitStack) -> None:
    """Write the view for this CPU as symlinks: on a tmpfs over ``top`` in a private
    namespace (through a private bind of ROOT if ``top`` covers it), else into ``top``,
    which is checked as a mount's MOUNTPOINT is."""
    options = config.mount_options
    in_place = _covers(top, config.root)
    if not in_place and options.serves_root():
        check_mountpoint(top)
    if options.loader_links is not None:
        check_loader_links(options.loader_links, options.serves_root())
    detection = detect(config.detect_options)
    store = scan(config.root, detection.architecture, config.layout)
    target = detection.target(require_trusted=options.serves_root())
    loader_view = (view_containing(options.loader_links)
                   if options.loader_links is not None and options.levels_view else None)
    applied = apply_view_options(store, target, resolve_store(store, target).values(),
                                 options, loader_view)
    for message in (*detection.warnings, *store.warnings, *applied.warnings):
        print(show(f"hwcaps-fs: warning: {message}"), file=sys.stderr, flush=True)
    view = plan_symlink_view(applied.dirs, applied.resolutions)
    link_base = config.root
    if isolation.private:
        if in_place:
            # The bind shows ROOT without the directories above it, so it sits in one that
            # keeps out whom they keep out (as the view's top does; its maker may enter).
            holder = _private_directory(cleanup, view.top_mode | stat.S_IRWXU)
            link_base = os.path.join(holder, "root")
            namespaces.make_directory(link_base, FILLING_MODE)
            cleanup.callback(os.rmdir, link_base)
            _mount_private(config.root, link_base, None, namespaces.MS_BIND | namespaces.MS_REC)
            cleanup.callback(namespaces.detach, link_base)
        _mount_private("tmpfs", top, "tmpfs", namespaces.MS_NOSUID | namespaces.MS_NODEV,
                       f"mode={FILLING_MODE:o}")
        cleanup.callback(namespaces.detach, top)
        top_mode = view.top_mode
    elif os.listdir(top):
        raise MountError(f"cannot serve a symlink view in {top}: it is not empty, and no "
                         "tmpfs can be mounted over it here")
    else:
        top_mode = _borrow(top, view.top_mode, cleanup)
    write_symlink_view(view, top, link_base)
    os.chmod(top, top_mode)
    if isolation.private:
        _mount_private(None, top, None, namespaces.MS_REMOUNT | namespaces.MS_RDONLY
                       | namespaces.MS_NOSUID | namespaces.MS_NODEV)
