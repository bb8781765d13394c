"""The errors a user can meet, each with the exit status the command line gives it.

Every error hwcaps-fs raises on bad input is a :class:`HwcapsFsError`: the command line prints
its message as one line on stderr and exits with its ``exit_code``; anything else is a bug.
The codes are listed in :data:`EXIT_STATUSES`, which hwcaps-fs(1) and README.md show.
"""

from __future__ import annotations


class HwcapsFsError(Exception):
    """Base class: a problem the user can act on, reported as one line."""

    exit_code = 1


class UsageError(HwcapsFsError):
    """A bad option, option value, level name or configuration file."""

    exit_code = 2


class PathError(HwcapsFsError):
    """A path given is missing or unusable: ROOT or MOUNTPOINT (not a directory, unreadable),
    a name that is not in the store, a ``--cpuinfo``/``--auxv``/``--stdin`` file."""

    exit_code = 3


class MountError(HwcapsFsError):
    """The mount could not be made or removed (busy mountpoint, no FUSE, ...)."""

    exit_code = 4


class CommandNotFoundError(HwcapsFsError):
    """``hwcaps-fs run`` could not find the command to execute."""

    exit_code = 127


class CommandNotExecutableError(HwcapsFsError):
    """``hwcaps-fs run`` found the command but could not execute it."""

    exit_code = 126


def show(name: str) -> str:
    """``name`` (a path or file name) safe to print in a message, a log line or a report.

    Names are data a user may choose: a newline in one would forge a log line, an escape
    sequence would drive the terminal. A name of printable characters is shown as it is;
    any other is put in single quotes with Python's escapes (``'a\\nb'``, ``'\\x1b'``),
    bytes that are not UTF-8 as ``\\xNN``, and quotes and backslashes escaped.
    """
    if name.isprintable():
        return name
    return "'" + "".join(map(_escape, name)) + "'"


def _escape(char: str) -> str:
    code = ord(char)
    if 0xDC80 <= code <= 0xDCFF:  # a byte os.fsdecode could not decode
        return f"\\x{code - 0xDC00:02x}"
    if char in "\\'":
        return "\\" + char
    return char if char.isprintable() else repr(char)[1:-1]


#: Exit status for a bug (sysexits EX_SOFTWARE), so it is never mistaken for a user error.
EXIT_INTERNAL = 70

#: Every exit status of the command line, as its manual page lists them.
EXIT_STATUSES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (1, "check found errors; which found no usable candidate; compare found a build that does "
        "not behave like the baseline"),
    (UsageError.exit_code, "bad command line, option, level name or configuration file"),
    (PathError.exit_code, "a path given is missing or unusable: ROOT or MOUNTPOINT (not a "
                          "directory, unreadable), a RELPATH that names nothing in the store, a "
                          "--cpuinfo, --auxv or --stdin file"),
    (MountError.exit_code, "the mount could not be made or removed"),
    (EXIT_INTERNAL, "internal error (a bug: please report it; HWCAPS_FS_DEBUG=1 shows the "
                    "traceback)"),
    (CommandNotExecutableError.exit_code, "run: the command cannot be executed"),
    (CommandNotFoundError.exit_code, "run: the command is not found"),
)
