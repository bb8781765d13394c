"""Ask the system's glibc loader which glibc-hwcaps subdirectories it would search.

The loader is the most faithful source there is: its answer includes what /proc/cpuinfo cannot
show (XCR0/OS support, vendor quirks, the BMI1/BMI2 backport status of this glibc build, and
the ``GLIBC_TUNABLES=glibc.cpu.hwcaps=-...`` masking of the environment it runs in).

* glibc >= 2.34: ``ld.so --list-diagnostics`` prints ``dl_hwcaps_subdirs="a:b:c"`` (most
  preferred first), ``dl_hwcaps_subdirs_active=0x...`` (bit 0 = first name) and, on x86,
  ``x86.cpu_features.isa_1=0x...`` (the GNU_PROPERTY_X86_ISA_1 bits, computed *before* the
  tunables are applied, which is what glibc's ISA-note check uses).
* glibc 2.33: ``ld.so --help`` lists the names under "Subdirectories of glibc-hwcaps
  directories, in priority order:" with ``(supported, searched)`` on the active ones.

The parsers are pure functions over the text; :func:`probe_loader` is the thin shell that runs
the program.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

#: How long the loader may take to print its diagnostics before it is given up on.
LOADER_TIMEOUT = 5.0

HELP_HEADER = "Subdirectories of glibc-hwcaps directories, in priority order:"
HELP_NONE = "No subdirectories of glibc-hwcaps directories are searched."


@dataclass(frozen=True)
class LoaderReport:
    """What the loader said. ``subdirs`` are all the names it knows, most preferred first;
    ``active`` the ones it would search (same order); ``isa_1`` x86's unmasked ISA bits, when
    it printed them."""

    method: str
    subdirs: tuple[str, ...]
    active: tuple[str, ...]
    isa_1: int | None = None
    version: str | None = None


_DIAG_LINE = re.compile(r"^([A-Za-z0-9_.\[\]]+)=(.*)$")
_ESCAPE = re.compile(r"\\([0-7]{3}|.)")


def _unquote(value: str) -> str:
    """Undo ``_dl_diagnostics_print_string``: quotes around, backslash escapes, octal bytes."""
    if len(value) < 2 or value[0] != '"' or value[-1] != '"':
        return value
    return _ESCAPE.sub(
        lambda m: chr(int(m.group(1), 8)) if len(m.group(1)) == 3 else m.group(1), value[1:-1]
    )


def parse_list_diagnostics(text: str) -> LoaderReport | None:
    """Decode ``ld.so --list-diagnostics`` output; None when it lacks the glibc-hwcaps keys
    (not a glibc >= 2.34 loader, or garbage)."""
    values: dict[str, str] = {}
    for line in text.splitlines():
        match = _DIAG_LINE.match(line)
        if match:
            values.setdefault(match.group(1), match.group(2))
    if "dl_hwcaps_subdirs" not in values or "dl_hwcaps_subdirs_active" not in values:
        return None
    names = tuple(name for name in _unquote(values["dl_hwcaps_subdirs"]).split(":") if name)
    isa_text = values.get("x86.cpu_features.isa_1")
    try:
        mask = int(values["dl_hwcaps_subdirs_active"], 0)
        isa_1 = int(isa_text, 0) if isa_text is not None else None
    except ValueError:
        return None
    active = tuple(name for bit, name in enumerate(names) if mask & (1 << bit))
    version = _unquote(values["version.version"]) if "version.version" in values else None
    return LoaderReport("ld.so --list-diagnostics", names, active, isa_1, version)


def parse_help(text: str) -> LoaderReport | None:
    """Decode the glibc-hwcaps section of ``ld.so --help`` (glibc >= 2.33); None if absent.

    Each line is ``  NAME`` optionally followed by a parenthesised list of ``supported``,
    ``searched``, ``masked``. Names with ``searched`` but not ``supported`` come from
    ``--glibc-hwcaps-prepend`` (never passed here) and are not built-in levels.
    """
    lines = text.splitlines()
    if any(line.strip() == HELP_NONE for line in lines):
        return LoaderReport("ld.so --help", (), ())
    try:
        start = [line.strip() for line in lines].index(HELP_HEADER) + 1
    except ValueError:
        return None
    names: list[str] = []
    active: list[str] = []
    for line in lines[start:]:
        if not line.startswith(" ") or not line.strip():
            break
        name, _, notes = line.strip().partition(" ")
        tags = {tag.strip() for tag in notes.strip("()").split(",")} if notes else set()
        if "searched" in tags and "supported" not in tags:
            continue
        names.append(name)
        if "supported" in tags:
            active.append(name)
    return LoaderReport("ld.so --help", tuple(names), tuple(active))


def probe_loader(
    loader: str, environ: Mapping[str, str], timeout: float = LOADER_TIMEOUT
) -> tuple[LoaderReport | None, tuple[str, ...]]:
    """Run ``loader`` (made absolute, so no PATH search) with ``environ`` as its whole
    environment, first with ``--list-diagnostics`` then with ``--help``.

    Returns the report, or None and one line per attempt saying why it gave nothing. A
    missing or broken loader is not an error: detection falls back to /proc/cpuinfo.
    """
    path = os.path.abspath(loader)
    notes: list[str] = []
    for option, parse in (("--list-diagnostics", parse_list_diagnostics), ("--help", parse_help)):
        try:
            done = subprocess.run(
                [path, option],
                env=dict(environ),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            notes.append(f"{path} {option}: {exc}")
            return None, tuple(notes)
        report = parse(done.stdout.decode("utf-8", "replace")) if done.returncode == 0 else None
        if report is not None:
            return report, tuple(notes)
        notes.append(f"{path} {option}: exit status {done.returncode}, no glibc-hwcaps report")
    return None, tuple(notes)
