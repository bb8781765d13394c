"""The daemon as a process: sd_notify, detaching (its logs then go where
:mod:`hwcaps_fs.system.logs` says), and the wait for it.

``mount`` returns only once the mount serves: mount(8) and mount.fuse3 wait for the command to
exit, and what runs next at boot may exec through the mount. :func:`start_detached` forks
(twice, so no zombie is left to the caller) before anything is opened; the daemon mounts,
starts its event loop and only then tells the waiting parent (:mod:`hwcaps_fs.system.handshake`);
a failure travels the same way and is raised in the parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from typing import NoReturn

from hwcaps_fs.errors import HwcapsFsError, MountError
from hwcaps_fs.system import handshake
from hwcaps_fs.system.logs import keep_stderr, log_detached

log = logging.getLogger(__name__)

#: The exit status of a daemon that failed on a bug rather than on bad input (EX_SOFTWARE).
EXIT_INTERNAL = 70


def notify(message: str) -> None:
    """Send ``message`` to systemd's $NOTIFY_SOCKET (sd_notify), if there is one. A socket
    that is gone (the service manager stopped listening) is logged, never an error: the
    view being served matters more than telling about it."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.info("cannot notify %s: %s", address, exc.strerror)


def exit_now(status: int) -> NoReturn:
    """End this process without the interpreter's teardown, its logs and stdio flushed: what
    ``mount`` does once its daemon serves. mount(8) and the boot wait for it to exit, and
    unloading pyfuse3 and trio took 25 ms, a tenth of a mount of 5,000 names."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    os._exit(status)


def _detach_stdio() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


#: What a daemon runs: it calls its argument once it serves, and returns when it is done.
Work = Callable[[Callable[[], None]], None]


def _daemon(work: Work, to_parent: int, keep_stdio: bool, stderr_fallback: bool) -> int:
    """The daemon process: run ``work``, telling ``to_parent`` once it serves, or its error
    (which, once the parent has been told, can only be logged)."""
    told = False

    def tell(outcome: handshake.Outcome) -> None:
        nonlocal told
        if not told:
            told = True
            handshake.send(to_parent, outcome)

    def ready() -> None:
        tell("ready")
        if not keep_stdio:
            fallback = keep_stderr() if stderr_fallback else None
            _detach_stdio()
            log_detached(fallback)

    try:
        work(ready)
    except HwcapsFsError as error:
        if told:
            log.error("%s", error)
        tell(error)
        return error.exit_code
    except Exception as error:
        log.exception("hwcaps-fs daemon failed")
        with contextlib.suppress(OSError):
            tell(MountError(f"internal error: {error!r}"))
        return EXIT_INTERNAL
    return 0


def start_detached(work: Work, *, keep_stdio: bool, what: str,
                   stderr_fallback: bool = False) -> None:
    """Run ``work`` in a detached daemon (its own session, adopted by init or a subreaper) and
    return once it called ready; raise the error it reported otherwise. ``keep_stdio`` keeps
    its stdio (``debug``); ``stderr_fallback`` keeps its stderr for the log where there is
    no syslog (``run``: see :mod:`hwcaps_fs.system.logs`); ``what`` names the mount in the
    message of a daemon that died."""
    from_child, to_parent = os.pipe()
    first = os.fork()
    if first == 0:
        os.close(from_child)
        os.setsid()
        if os.fork() == 0:
            code = _daemon(work, to_parent, keep_stdio, stderr_fallback)
            logging.shutdown()
            os._exit(code)
        os._exit(0)
    os.close(to_parent)
    os.waitpid(first, 0)
    outcome = handshake.receive(from_child)
    if outcome is None:
        raise MountError(f"cannot mount {what}: the daemon exited before serving")
    if isinstance(outcome, BaseException):
        raise outcome
