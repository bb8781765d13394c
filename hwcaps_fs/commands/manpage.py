"""The manual pages, written from the command line's own parser and tables, so that they
cannot say something ``--help`` does not:

    python -m hwcaps_fs.commands.manpage build/man      (make man)

writes ``hwcaps-fs.1`` (the commands, their options and examples, the exit statuses) and
``mount.hwcaps-fs.8`` (``mount -t hwcaps-fs``, the ``-o`` options, fstab). The date in the
header is ``SOURCE_DATE_EPOCH``'s when set (reproducible builds), else left out.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable
from pathlib import Path

from hwcaps_fs import __version__
from hwcaps_fs.commands.cli import (
    COMMANDS,
    DESCRIPTION,
    build_parser,
    option_label,
    subcommands,
)
from hwcaps_fs.core.mount_options import ALWAYS, DOCUMENTED
from hwcaps_fs.detect.overrides import ENV_VARIABLE
from hwcaps_fs.errors import EXIT_STATUSES

#: mount(8)'s exit codes, as the helper gives them.
HELPER_EXIT_STATUSES = (
    (0, "the view is mounted and served"),
    (1, "bad invocation or option"),
    (32, "mount failure: ROOT or MOUNTPOINT unusable, the mount refused, hwcaps-fs not found"),
)

ENVIRONMENT = (
    (ENV_VARIABLE, "caps the level, as --level (the lowest override wins)"),
    ("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-FEATURE masks CPU features, as for the dynamic "
                       "loader, which is asked the level"),
    ("NOTIFY_SOCKET", "set by systemd: mount --foreground sends READY=1 and STATUS= once "
                      "serving"),
    ("JOURNAL_STREAM", "set by systemd: log lines carry their priority for the journal"),
    ("HWCAPS_FS_DEBUG", "set to 1: an internal error shows its traceback"),
)

FILES = (
    ("/etc/hwcaps-fs.toml", 'level = "LEVEL" caps the level, as --level'),
    ("/proc/cmdline", "hwcaps_fs.level=LEVEL caps the level; hwcaps_fs=off serves the baseline "
                      "only (and the units do not start)"),
)


def roff(text: str) -> str:
    """``text`` safe in a roff line: backslashes escaped, hyphens made minus signs (options
    must be typed as they read), no line starting a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text.startswith((".", "'")) else text


def _header(name: str, section: int, manual: str) -> list[str]:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else ""
    return [f'.TH {name.upper()} {section} "{date}" "hwcaps-fs {__version__}" "{manual}"']


def _section(title: str) -> list[str]:
    return [f'.SH "{title}"']


def _tagged(rows: Iterable[tuple[str, str]], bold: bool = True) -> list[str]:
    font = "B" if bold else "I"
    lines = []
    for tag, text in rows:
        lines += [".TP", f".{font} {roff(tag)}" if " " not in tag else f'.{font} "{roff(tag)}"',
                  roff(text)]
    return lines


def _example(lines: Iterable[str]) -> list[str]:
    return [".PP", ".RS", ".nf", *map(roff, lines), ".fi", ".RE"]


def _has_any(parser: argparse.ArgumentParser, labels: set[str]) -> bool:
    return any(option_label(action) in labels for action in parser._actions)


def synopsis(parser: argparse.ArgumentParser, shared: set[str]) -> str:
    """A command's usage, with the level detection options said once."""
    words = ["[level detection options]"] if _has_any(parser, shared) else []
    positionals = []
    for action in parser._actions:
        label = option_label(action)
        if label in shared or isinstance(action, argparse._HelpAction):
            continue
        if action.option_strings:
            word = label.split(", ")[-1] if action.nargs != 0 else action.option_strings[0]
            words.append(word if action.required else f"[{word}]")
        else:
            positionals.append(f"[{label}]" if action.nargs == "?" else label)
    return " ".join(words + positionals)


def _options(parser: argparse.ArgumentParser, skip: set[str]) -> list[tuple[str, str]]:
    rows = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, argparse._HelpAction):
            continue
        label = option_label(action)
        if label not in skip:
            help_text = (action.help or "") % {"default": action.default}
            rows.append((label, help_text))
    return rows


def hwcaps_fs_1() -> str:
    """The hwcaps-fs(1) page."""
    parser = build_parser()
    commands = subcommands(parser)
    detection = next(group for group in commands["levels"]._action_groups
                     if group.title == "level detection")
    shared = {option_label(action) for action in detection._group_actions}
    lines = _header("hwcaps-fs", 1, "User Commands")
    lines += [*_section("NAME"), "hwcaps\\-fs \\- each program's best build for this CPU "
              "(glibc\\-hwcaps for executables)"]
    lines += _section("SYNOPSIS")
    for name, sub in commands.items():
        lines += [".PP", f"\\fBhwcaps\\-fs {name}\\fR {roff(synopsis(sub, shared))}"]
    lines += [".PP", "\\fBhwcaps\\-fs\\fR \\-\\-version"]
    lines += [*_section("DESCRIPTION"), roff(DESCRIPTION)]
    lines += [".PP", "A variant store holds ROOT/bin/NAME (the baseline, for every CPU) and "
              "ROOT/glibc\\-hwcaps/LEVEL/bin/NAME (builds for CPUs of that level); the view "
              "shows ROOT/bin/NAME as the highest\\-level build this CPU can run."]
    lines += _section("COMMANDS")
    for name, sub in commands.items():
        command = COMMANDS[name]
        lines += [f'.SS "{name}"', roff(command.description)]
        lines += _tagged(_options(sub, shared | {"-h, --help"}))
        if _has_any(sub, shared):
            lines += [".PP", "And the level detection options (below)."]
        lines += [".PP", "Examples:"]
        for example, what in command.examples:
            lines += _example([example]) + ([".RS", roff(what), ".RE"] if what else [])
        if name in ("mount", "run"):
            lines += [".PP", "Mount options (\\-o): see \\fBmount.hwcaps\\-fs\\fR(8)."]
    lines += _section("LEVEL DETECTION OPTIONS")
    lines += [roff("Accepted by levels, which, check, mount and run. Overrides can lower the "
                   "level, never raise it above what the CPU supports; --force-level does.")]
    lines += _tagged(_options(commands["levels"], {"-h, --help", "--json"}))
    lines += _section("ENVIRONMENT") + _tagged(ENVIRONMENT)
    lines += _section("FILES") + _tagged(FILES)
    lines += _section("EXIT STATUS") + _tagged((str(code), text) for code, text in EXIT_STATUSES)
    lines += [".PP", "Errors are one line on standard error."]
    lines += _section("SEE ALSO")
    lines += ["\\fBmount.hwcaps\\-fs\\fR(8), \\fBld.so\\fR(8), \\fBmount\\fR(8), "
              "\\fBfstab\\fR(5), \\fBsystemd.mount\\fR(5)"]
    return "\n".join(lines) + "\n"


def mount_hwcaps_fs_8() -> str:
    """The mount.hwcaps-fs(8) page: the helper and the ``-o`` options."""
    lines = _header("mount.hwcaps-fs", 8, "System Administration")
    lines += _section("NAME")
    lines += ["mount.hwcaps\\-fs, mount.fuse.hwcaps\\-fs \\- mount a hwcaps\\-fs view"]
    lines += _section("SYNOPSIS")
    lines += [".B mount \\-t hwcaps\\-fs", "[\\fB\\-o\\fR \\fIOPTIONS\\fR] \\fIROOT MOUNTPOINT\\fR",
              ".PP", ".B hwcaps\\-fs mount",
              "[\\fB\\-o\\fR \\fIOPTIONS\\fR] [\\fB\\-\\-root\\fR] \\fIROOT MOUNTPOINT\\fR"]
    lines += _section("DESCRIPTION")
    lines += [roff("The mount(8) helper of hwcaps-fs: mount -t hwcaps-fs (or fuse.hwcaps-fs, in "
                   "fstab and .mount units) mounts the view of the variant store ROOT at "
                   "MOUNTPOINT, each name the best build this CPU runs (see hwcaps-fs(1)). "
                   "ROOT and MOUNTPOINT may be the same directory (in place). mount returns once "
                   "the view is served, with the daemon left running; umount stops it. The "
                   "helper needs no PATH: it runs the hwcaps-fs that was installed with it.")]
    lines += _section("OPTIONS") + _tagged(DOCUMENTED)
    lines += [".PP", roff(ALWAYS)]
    lines += _section("FSTAB")
    lines += _example(["/opt/hwcaps  /opt/hwcaps  hwcaps-fs  auto_unmount,nofail  0 0"])
    lines += [".PP", roff("serves the store /opt/hwcaps in place at every boot; "
                          "/usr/bin/foo -> /opt/hwcaps/bin/foo then runs the best build, and the "
                          "baseline whenever the view is not there.")]
    lines += _section("EXIT STATUS")
    lines += _tagged((str(code), text) for code, text in HELPER_EXIT_STATUSES)
    lines += _section("SEE ALSO")
    lines += ["\\fBhwcaps\\-fs\\fR(1), \\fBmount\\fR(8), \\fBfstab\\fR(5), "
              "\\fBsystemd.mount\\fR(5), \\fBmount.fuse3\\fR(8)"]
    return "\n".join(lines) + "\n"


PAGES = {"hwcaps-fs.1": hwcaps_fs_1, "mount.hwcaps-fs.8": mount_hwcaps_fs_8}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwcaps_fs.commands.manpage",
                                     description="write hwcaps-fs's manual pages")
    parser.add_argument("directory", type=Path, help="where to write them (e.g. build/man)")
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for name, page in PAGES.items():
        (args.directory / name).write_text(page())
        print(args.directory / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
