"""Level overrides: the command line, ``HWCAPS_FS_LEVEL``, the kernel command line and
``/etc/hwcaps-fs.toml``.

Each source can only *lower* the level (the lowest one set wins, and none can raise it above
what the CPU supports), so an override is always safe to leave in place when the hardware
changes. ``--force-level`` is the one exception and lives in :mod:`hwcaps_fs.detect.cpu`.

A level name that the architecture does not have is a :class:`~hwcaps_fs.errors.UsageError`
wherever it comes from, naming the source: silently ignoring a typo in an override would serve
a level the administrator asked not to, and a refused start leaves the plain directory in place.
A malformed configuration file is one too. A missing configuration file or kernel command line
is simply "not set".
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass

from hwcaps_fs.core.levels import Architecture, UnknownLevelError
from hwcaps_fs.errors import UsageError

#: The command line's two ways to cap the level, as error messages and ``levels`` name them.
COMMAND_LINE_SOURCES = ("--level", "-o level=")
#: The environment variable that caps the level.
ENV_VARIABLE = "HWCAPS_FS_LEVEL"
#: Kernel command line parameters: ``hwcaps_fs.level=NAME`` caps, ``hwcaps_fs=off`` means the
#: baseline only.
CMDLINE_LEVEL = "hwcaps_fs.level"
CMDLINE_SWITCH = "hwcaps_fs"
CMDLINE_OFF = "off"
#: The key of the configuration file (the only one: any other is an error naming it).
CONFIG_KEY = "level"
#: The largest configuration file read (a level name needs a few bytes).
CONFIG_MAX_BYTES = 64 * 1024


def parse_level_name(arch: Architecture, name: str, source: str = "level") -> str:
    """The canonical name of level ``name`` on ``arch``: one of its level names or
    ``"baseline"`` (``x86-64-v1``, the hwcaps-loader name, is accepted for it on x86).

    Raises :class:`UsageError` naming ``source`` and listing the known names.
    """
    try:
        return arch.level(name.strip()).name
    except UnknownLevelError as exc:
        raise UsageError(f"{source}: {exc}") from None


@dataclass(frozen=True)
class Override:
    """One override source: its name (what ``Detection.decided_by`` says when it wins), the
    canonical level it asks for (None when not set) and a line for the steps."""

    source: str
    level: str | None
    outcome: str


def cmdline_level(cmdline: str) -> tuple[str | None, str]:
    """The raw level the kernel command line asks for (``"baseline"`` for ``hwcaps_fs=off``)
    and a line saying what was found. ``hwcaps_fs=off`` wins wherever it is (it is what turns
    the units off too); otherwise the last ``hwcaps_fs.level`` wins, as for kernel
    parameters. Words after ``--`` belong to init, not to the kernel."""
    requested: str | None = None
    found = "not set"
    for word in cmdline.split():
        if word == "--":
            break
        key, _, value = word.partition("=")
        if key == CMDLINE_SWITCH and value == CMDLINE_OFF:
            return "baseline", word
        if key == CMDLINE_LEVEL:
            requested, found = value, word
    return requested, found


def config_level(path: str) -> tuple[str | None, str]:
    """The raw ``level`` of the TOML file at ``path`` (None if the file or the key is absent)
    and a line saying what was found.

    Raises :class:`UsageError` naming the file for one that is not a regular file, larger than
    :data:`CONFIG_MAX_BYTES`, unreadable or malformed, for a key other than ``level`` and
    for a ``level`` that is not a string.
    """
    try:
        text = _read_config(path)
    except FileNotFoundError:
        return None, "no such file"
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    import tomllib  # only when there is a file: most systems have none, and boot waits

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{path}: malformed TOML: {exc}") from None
    unknown = sorted(data.keys() - {CONFIG_KEY})
    if unknown:
        raise UsageError(f"{path}: unknown key {unknown[0]!r} (the only key is {CONFIG_KEY!r})")
    value = data.get(CONFIG_KEY)
    if value is None:
        return None, f"no {CONFIG_KEY} set"
    if not isinstance(value, str):
        raise UsageError(f'{path}: {CONFIG_KEY} must be a string such as "x86-64-v3"')
    return value, f"{CONFIG_KEY} = {value!r}"


def _read_config(path: str) -> str:
    """The text of the configuration file: a regular file (opened without blocking, so a FIFO
    cannot hang the boot), at most :data:`CONFIG_MAX_BYTES`, UTF-8."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UsageError(f"{path}: not a regular file")
        data = os.read(fd, CONFIG_MAX_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > CONFIG_MAX_BYTES:
        raise UsageError(f"{path}: larger than {CONFIG_MAX_BYTES // 1024} KiB: not a "
                         "configuration file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not UTF-8 text") from None


def read_overrides(
    arch: Architecture,
    command_line: tuple[str | None, str | None],
    environ: Mapping[str, str],
    kernel_cmdline: str,
    config: str,
) -> tuple[Override, ...]:
    """Every override source in precedence order for ties (the command line first), set or
    not. ``command_line`` is ``(--level, -o level=)``. ``kernel_cmdline`` and ``config`` are
    paths; an unreadable kernel command line counts as not set, since it is not something the
    user wrote wrong."""
    overrides = [_named(source, value, "given" if value else "not given", arch)
                 for source, value in zip(COMMAND_LINE_SOURCES, command_line, strict=True)]
    env_value = environ.get(ENV_VARIABLE, "").strip() or None  # blank is unset, as ""
    overrides.append(_named(ENV_VARIABLE, env_value, "set" if env_value else "not set", arch))
    try:
        with open(kernel_cmdline, encoding="utf-8", errors="replace") as file:
            requested, found = cmdline_level(file.read())
    except OSError as exc:
        requested, found = None, f"unreadable ({exc.strerror})"
    overrides.append(_named("kernel command line", requested, found, arch))
    overrides.append(_named(config, *config_level(config), arch))
    return tuple(overrides)


def _named(source: str, raw: str | None, found: str, arch: Architecture) -> Override:
    if raw is None:
        return Override(source, None, found)
    level = parse_level_name(arch, raw, source)
    return Override(source, level, f"{found}: at most {level}")
