"""Where the daemon's log lines go, and in which form, so that they read right wherever that is.

* **stderr connected to the journal** (systemd runs us with ``JOURNAL_STREAM=dev:ino`` naming
  stderr: ``hwcaps-fs@.service``, the mount helper in a ``.mount`` unit): each line is
  ``<N>message``. journald takes ``<N>`` as the line's priority (``SyslogLevelPrefix=``) and
  adds the name and pid itself, so a prefix of ours would show twice and every line would be
  "info".
* **stderr elsewhere** (a terminal, a container's log, a test): ``hwcaps-fs[pid]: LEVEL:
  message``, where nothing else says who wrote the line.
* **detached** (``mount`` without ``--foreground`` once the daemon serves): syslog's
  ``/dev/log``, which carries the priority. Where there is none (a container, a minimal
  system), ``run``'s daemon keeps writing to the stderr it was started with (CMD's), so that
  a warning never vanishes; ``mount``'s cannot: its caller may be waiting for that stderr to
  close.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from typing import TextIO

from hwcaps_fs.errors import show

NAME = "hwcaps-fs"
SYSLOG_SOCKET = "/dev/log"

#: syslog(3) priorities of Python's levels (journald and syslog read these).
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}


def priority(levelno: int) -> int:
    """The syslog priority of a Python level (a custom level takes the next standard one up)."""
    return next((PRIORITIES[level] for level in sorted(PRIORITIES) if levelno <= level), 2)


def is_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is the journal stream systemd gave us (``$JOURNAL_STREAM`` is the
    device and inode of that socket; a child that redirected its stderr no longer matches)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        fd_stat = os.fstat(stream.fileno())
        return (fd_stat.st_dev, fd_stat.st_ino) == (int(device), int(inode))
    except (OSError, ValueError):
        return False


class QuotedFormatter(logging.Formatter):
    """Every message through :func:`~hwcaps_fs.errors.show`: whatever name it carries, it
    stays one line, and no control character reaches a terminal or the journal."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # logging's name
        return show(super().formatMessage(record))


class JournalFormatter(QuotedFormatter):
    """``<N>message``: the priority journald reads, nothing it adds itself."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return "\n".join(f"<{priority(record.levelno)}>{line}" for line in text.splitlines())


def stream_handler(stream: TextIO) -> logging.Handler:
    """A handler writing to ``stream`` in the form its reader expects (see the module)."""
    handler = logging.StreamHandler(stream)
    if is_journal(stream):
        handler.setFormatter(JournalFormatter("%(message)s"))
    else:
        handler.setFormatter(QuotedFormatter(f"{NAME}[%(process)d]: %(levelname)s: "
                                             "%(message)s"))
    return handler


def log_to_stderr(level: int) -> None:
    """Send the log to stderr, in its reader's form, from ``level`` up."""
    root = logging.getLogger()
    root.handlers[:] = [stream_handler(sys.stderr)]
    root.setLevel(level)


def keep_stderr() -> TextIO:
    """A private copy of stderr, that :func:`log_detached` can fall back to once stderr
    itself has been pointed at /dev/null."""
    return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, errors="backslashreplace")


def _syslog_answers() -> bool:
    """Whether something listens on ``/dev/log`` (SysLogHandler does not say: it swallows a
    failure to connect and then drops every record)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as probe:
        try:
            probe.connect(SYSLOG_SOCKET)
        except OSError:
            return False
    return True


def log_detached(fallback: TextIO | None) -> None:
    """After detaching: syslog (``/dev/log``) if it answers, else ``fallback`` (the stderr
    kept by :func:`keep_stderr`), else nothing."""
    import logging.handlers  # once serving: not on the boot path

    handler: logging.Handler
    if _syslog_answers():
        handler = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(QuotedFormatter(f"{NAME}[%(process)d]: %(message)s"))
    elif fallback is not None:
        handler = stream_handler(fallback)
    else:
        handler = logging.NullHandler()
    if fallback is not None and not isinstance(handler, logging.StreamHandler):
        fallback.close()
    logging.getLogger().handlers[:] = [handler]
