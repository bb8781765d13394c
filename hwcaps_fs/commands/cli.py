"""The ``hwcaps-fs`` command line: argument parsing and dispatch, nothing else.

Every command turns bad input into one line on stderr and a documented exit status (see
:mod:`hwcaps_fs.errors` and README.md "Exit status"): argparse's own two-line usage errors are
replaced, and an unexpected exception is reported as one line too, because the people who meet
it are administrators at boot, not Python developers. ``HWCAPS_FS_DEBUG=1`` shows the traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

from hwcaps_fs import __version__
from hwcaps_fs.commands.compare_settings import Settings
from hwcaps_fs.core.model import Layout, Store
from hwcaps_fs.core.mount_options import ALWAYS, DOCUMENTED
from hwcaps_fs.core.resolve import resolve
from hwcaps_fs.detect.cpu import Detection, DetectOptions, detect
from hwcaps_fs.errors import EXIT_INTERNAL, HwcapsFsError, UsageError, show
from hwcaps_fs.store.scan import scan


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, so main() prints them)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _detect_arguments() -> _Parser:
    """What every command that detects the level accepts: the overrides, the configuration."""
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("level detection")
    group.add_argument("--level", "--max-level", dest="level", metavar="LEVEL",
                       help="highest level to use: lowers what the CPU supports, never raises it")
    group.add_argument("--force-level", metavar="LEVEL",
                       help="use exactly LEVEL, even above what the CPU supports (risks SIGILL)")
    group.add_argument("--config", metavar="FILE", default="/etc/hwcaps-fs.toml",
                       help="configuration file (default: %(default)s)")
    return parent


def _diagnostic_arguments() -> _Parser:
    """Another machine's description, for the commands that only report (levels, which,
    check): a mount serves what this machine's loader runs, never what a file says."""
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("another machine")
    group.add_argument("--cpuinfo", metavar="FILE",
                       help="compute the level from this /proc/cpuinfo instead of asking ld.so, "
                            "with glibc's rules and the GLIBC_TUNABLES of the environment; a "
                            "cpuinfo file cannot show whether the kernel enabled the AVX-512 "
                            "register state in XCR0 (glibc checks it; kernels hide the avx512 "
                            "flags when they do not enable it)")
    group.add_argument("--auxv", metavar="FILE",
                       help="aux vector for --cpuinfo (AT_HWCAP/AT_HWCAP2 on ppc64le, s390x)")
    group.add_argument("--machine", metavar="MACHINE",
                       help="architecture of --cpuinfo, as uname -m says it (default: guessed)")
    return parent


def _layout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=[layout.value for layout in Layout],
                        help="store layout (default: detected)")


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


@dataclass(frozen=True)
class Command:
    """What ``--help`` and the man page say about a command."""

    summary: str
    description: str
    examples: tuple[tuple[str, str], ...]


DESCRIPTION = ("glibc-hwcaps for executables: a read-only FUSE view of a bin directory in which "
               "every name runs the best build this CPU supports, with glibc's rules.")

#: Every command, in the order --help lists them.
COMMANDS: dict[str, Command] = {
    "levels": Command(
        "show the CPU's levels and how they were found",
        "Show every level of this architecture, whether the CPU supports it and whether it is "
        "searched, the level in effect, and each detection step: overrides, then the system's "
        "dynamic loader, else /proc/cpuinfo and the aux vector.",
        (("hwcaps-fs levels", "the level this machine serves, and why"),
         ("hwcaps-fs levels --json", "the same as fields for tools"),
         ("hwcaps-fs levels --cpuinfo cpuinfo.txt", "the level of the machine cpuinfo.txt "
                                                     "comes from"))),
    "which": Command(
        "show what RELPATH serves and why others were skipped",
        "Show the candidate the view of ROOT serves for RELPATH on this machine, and why each "
        "higher one was skipped. Exit status 1 when no candidate is usable.",
        (("hwcaps-fs which /opt/hwcaps bin/foo", "the build /opt/hwcaps/bin/foo runs here"),
         ("hwcaps-fs which --level x86-64-v2 /opt/hwcaps bin/foo", "the one an x86-64-v2 "
                                                                     "machine runs"))),
    "check": Command(
        "lint a store for packaging errors",
        "Lint a store as the view would serve it to root: variants without a baseline, builds "
        "for another machine or a higher level than their directory, files or directories a "
        "non-root user could change. Exit status 1 when there are errors.",
        (("hwcaps-fs check /opt/hwcaps", "one line per finding, then a summary"),
         ("hwcaps-fs check --json /opt/hwcaps", "the findings as fields"))),
    "compare": Command(
        "run every build of RELPATH this CPU can run and say which is worth shipping",
        "Run every build of RELPATH this CPU can run (as resolution would serve them at each "
        "level), with ARGS, interleaved, until the speed-ups are conclusive or the budget ends; "
        "report median wall and CPU times, speed-ups over the baseline with 95% intervals, and "
        "what a packager should do. Standard input is read once and fed to every run (or "
        "/dev/null on a terminal). Exit status 1 when a build's output or exit status differs "
        "from the baseline's. See docs/packagers.md.",
        (("hwcaps-fs compare /opt/hwcaps bin/foo -- --input data.txt",
          "is the variant build of foo worth shipping?"),
         ("hwcaps-fs compare --json /opt/hwcaps bin/foo -- ARGS < input",
          "the same as fields for tools, input fed to every run"),
         ("hwcaps-fs compare --status-only --budget 10 /opt/hwcaps bin/hwcaps-demo -- 20000",
          "compare exit statuses only, for 10 s at most"))),
    "mount": Command(
        "mount the view",
        "Mount the view of ROOT at MOUNTPOINT: the merged tree, read-only, each name the best "
        "build this CPU runs. Without ROOT the directory is mounted over itself (in place). "
        "The command returns once the view is served, the daemon left in the background; "
        "with --foreground it serves until unmounted, and under systemd it sends READY=1 "
        "and STATUS= once serving.",
        (("hwcaps-fs mount --root /opt/hwcaps /opt/hwcaps-view", "the view of a store"),
         ("hwcaps-fs mount /opt/hwcaps /opt/hwcaps-view", "the same, in mount(8)'s order"),
         ("hwcaps-fs mount -o auto_unmount /opt/hwcaps", "in place, removed if the daemon "
                                                         "dies"))),
    "umount": Command(
        "unmount a view",
        "Unmount the view at MOUNTPOINT; its daemon then exits.",
        (("hwcaps-fs umount /opt/hwcaps-view", ""),)),
    "run": Command(
        "mount the view, then exec CMD (a container entrypoint)",
        "Make the view of ROOT appear (a FUSE mount in a private mount namespace, else a "
        "directory of symlinks, which refuses -o noexec: a link cannot make anything "
        "non-executable), then exec CMD, which keeps the process: its signals and exit "
        "status are CMD's. CMD is looked up in PATH, then in the view's bin/ and sbin/. The "
        "view goes when CMD ends.",
        (("hwcaps-fs run --root /opt/app -- hwcaps-demo", "the best build of hwcaps-demo"),
         ("hwcaps-fs run --root /opt/app --mountpoint /opt/app-view -- sh", "a shell with the "
                                                                            "view in place"))),
}


def _paragraph(text: str) -> str:
    return textwrap.fill(text, width=78, break_on_hyphens=False)


def examples_text(command: Command) -> str:
    lines = ["examples:"]
    for line, what in command.examples:
        lines.append(f"  {line}")
        if what:
            lines.append(f"      {what}")
    return "\n".join(lines)


def mount_options_text() -> str:
    """The ``-o`` table, as mount --help shows it."""
    width = max(len(name) for name, _ in DOCUMENTED) + 2
    rows = [textwrap.fill(meaning, width=78, initial_indent="  " + name.ljust(width),
                          subsequent_indent=" " * (width + 2), break_on_hyphens=False)
            for name, meaning in DOCUMENTED]
    return "\n".join(["mount options (-o, comma-separated):", *rows, _paragraph(ALWAYS)])


def _add_command(commands: argparse._SubParsersAction[_Parser], name: str,
                 parents: Sequence[_Parser] = (), epilog: str = ""
                 ) -> _Parser:
    command = COMMANDS[name]
    return commands.add_parser(
        name, parents=parents, help=command.summary,
        description=_paragraph(command.description),
        epilog="\n\n".join(filter(None, [epilog, examples_text(command)])),
        formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    detect_parent = _detect_arguments()
    report_parents = [detect_parent, _diagnostic_arguments()]
    parser = _Parser(prog="hwcaps-fs", description=_paragraph(DESCRIPTION),
                     epilog=_paragraph("'hwcaps-fs COMMAND --help' describes each command, with "
                                       "examples. Manual pages: hwcaps-fs(1), "
                                       "mount.hwcaps-fs(8)."),
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    levels = _add_command(commands, "levels", report_parents)
    _json_argument(levels)

    which = _add_command(commands, "which", report_parents)
    which.add_argument("root", metavar="ROOT", help="the store")
    which.add_argument("relpath", metavar="RELPATH", help="a name in the view, as bin/foo")
    _layout_argument(which)
    _json_argument(which)

    check = _add_command(commands, "check", report_parents)
    check.add_argument("root", metavar="ROOT", help="the store")
    _layout_argument(check)
    _json_argument(check)

    compare = _add_command(commands, "compare", [detect_parent])
    compare.usage = "%(prog)s [options] ROOT RELPATH [-- ARGS...]"
    compare.add_argument("root", metavar="ROOT")
    compare.add_argument("relpath", metavar="RELPATH")
    compare.add_argument("--budget", type=float, default=Settings.budget, metavar="SECONDS",
                         help="stop measuring after this long, conclusive or not "
                              "(default: %(default)s)")
    compare.add_argument("--min-rounds", type=int, default=Settings.min_rounds, metavar="N",
                         help="rounds to run whatever the budget (default: %(default)s)")
    compare.add_argument("--max-rounds", type=int, default=Settings.max_rounds, metavar="N",
                         help="rounds to run at most (default: %(default)s)")
    compare.add_argument("--tolerance", type=float, default=Settings.tolerance,
                         metavar="FRACTION",
                         help="speed-ups within 1±FRACTION count as no difference "
                              "(default: %(default)s)")
    compare.add_argument("--timeout", type=float, default=Settings.timeout, metavar="SECONDS",
                         help="kill a run that takes longer (default: %(default)s)")
    compare.add_argument("--stdin", metavar="FILE",
                         help="feed FILE to every run (default: our standard input, read once, "
                              "or /dev/null on a terminal)")
    compare.add_argument("--status-only", action="store_true",
                         help="compare exit statuses only, not output (for programs that "
                              "print their build or a timing)")
    _layout_argument(compare)
    _json_argument(compare)

    mount = _add_command(commands, "mount", [detect_parent], epilog=mount_options_text())
    mount.add_argument("--root", metavar="ROOT", help="the store (default: MOUNTPOINT, in place)")
    mount.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                       help="comma-separated mount options (listed below)")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="serve in the foreground (sends READY=1 to $NOTIFY_SOCKET)")
    mount.add_argument("source", nargs="?", metavar="ROOT",
                       help="the store, as --root (mount(8)'s order: ROOT MOUNTPOINT)")
    mount.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the view appears")
    _layout_argument(mount)

    umount = _add_command(commands, "umount")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT", help="where the view is mounted")

    run = _add_command(commands, "run", [detect_parent], epilog=mount_options_text())
    run.add_argument("--root", metavar="ROOT", required=True, help="the store")
    run.add_argument("--mountpoint", metavar="DIR",
                     help="where the view appears (default: a private directory)")
    run.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                     help="comma-separated mount options (listed below)")
    _layout_argument(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]",
                     help="the command to exec once the view is there")
    return parser


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The command parsers of ``parser``, by name, in the order they were added (for the
    man page, the completion and their tests)."""
    # argparse keeps them in the action that add_subparsers() returned (no public accessor).
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def option_label(action: argparse.Action) -> str:
    """``-o OPTS``, ``--level LEVEL, --max-level LEVEL``, ``--json``: as --help shows it."""
    if not action.option_strings:
        return str(action.metavar or action.dest)
    if action.nargs == 0:
        return ", ".join(action.option_strings)
    metavar = action.metavar or action.dest.upper()
    if action.choices is not None and action.metavar is None:
        metavar = "|".join(map(str, action.choices))
    return ", ".join(f"{option} {metavar}" for option in action.option_strings)


def _mount_helper_form(argv: Sequence[str]) -> list[str]:
    """Rewrite ``SOURCE MOUNTPOINT -o OPTS`` (how mount.fuse3 calls us) as ``mount``."""
    if len(argv) >= 2 and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["mount", "--root", argv[0], *argv[1:]]
    return list(argv)


def detect_options(args: argparse.Namespace, option_level: str | None = None) -> DetectOptions:
    """Detection as the command line asks; ``option_level`` is ``-o level=`` (mount, run)."""
    return DetectOptions(
        max_level=args.level,
        option_level=option_level,
        force_level=args.force_level,
        cpuinfo=getattr(args, "cpuinfo", None),
        auxv=getattr(args, "auxv", None),
        machine=getattr(args, "machine", None),
        environ=dict(os.environ),
        config=args.config,
    )


def _layout(value: str | None) -> Layout | None:
    return Layout(value) if value else None


# Each command imports its own modules when it runs: ``mount`` is on the boot path, and
# what only ``compare`` or ``check`` needs would cost it time and the daemon memory.


def _run_levels(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands import report

    detection = detect(detect_options(args))
    report.emit(report.levels(detection), args.json)
    return 0


def _scan(args: argparse.Namespace, detection: Detection) -> Store:
    return scan(args.root, detection.architecture, _layout(args.layout))


def _run_which(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands import report
    from hwcaps_fs.commands.names import view_relpath

    detection = detect(detect_options(args))
    store = _scan(args, detection)
    relpath = view_relpath(store, args.relpath)
    resolution = resolve(relpath, store.candidates(relpath),
                         detection.target(require_trusted=os.geteuid() == 0))
    report.emit(report.which(detection, store, resolution), args.json)
    return 0 if resolution.served else 1


def _run_check(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands import report
    from hwcaps_fs.commands.check import Severity, check

    detection = detect(detect_options(args))
    store = _scan(args, detection)
    findings = check(store, detection.target(require_trusted=True))
    report.emit(report.check(store, findings), args.json)
    return 1 if any(finding.severity is Severity.ERROR for finding in findings) else 0


def _run_compare(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands import report
    from hwcaps_fs.commands.compare import run_compare
    from hwcaps_fs.commands.names import view_relpath

    detection = detect(detect_options(args))
    store = _scan(args, detection)
    relpath = view_relpath(store, args.relpath)
    settings = Settings(budget=args.budget, min_rounds=max(args.min_rounds, 1),
                        max_rounds=max(args.max_rounds, args.min_rounds, 1),
                        tolerance=args.tolerance, timeout=args.timeout or None)
    report_, status = run_compare(
        store, relpath, detection.target(require_trusted=os.geteuid() == 0),
        {"level": detection.level, "decided_by": detection.decided_by},
        args.program_args, args.stdin, settings,
        check_output=not args.status_only)
    report.emit(report_, args.json)
    return status


def _run_mount(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands.mount import mount
    from hwcaps_fs.core.mount_options import parse_mount_options
    from hwcaps_fs.system.preflight import MountConfig
    from hwcaps_fs.system.process import exit_now

    options = parse_mount_options(args.options, is_root=os.geteuid() == 0)
    root, mountpoint = _root_and_mountpoint(args.root, args.source, args.mountpoint)
    config = MountConfig(
        root=root,
        mountpoint=mountpoint,
        options=options,
        detect_options=detect_options(args, options.level),
        layout=_layout(args.layout) or options.layout,
        foreground=args.foreground,
    )
    mount(config)
    if not config.foreground:
        exit_now(0)
    return 0


def _root_and_mountpoint(option: str | None, source: str | None,
                         mountpoint: str) -> tuple[str, str]:
    """``[--root ROOT] MOUNTPOINT``, or ``ROOT MOUNTPOINT`` in mount(8)'s order."""
    if option is not None and source is not None:
        raise UsageError(f"mount: ROOT given twice (--root {option} and {source})")
    # An empty ROOT is not "no ROOT": preflight refuses it rather than mounting in place.
    return next((path for path in (option, source) if path is not None), mountpoint), mountpoint


def _run_umount(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands.mount import unmount

    unmount(args.mountpoint)
    return 0


def _run_run(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands.run import RunConfig, run
    from hwcaps_fs.core.mount_options import parse_mount_options

    command = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not command:
        raise UsageError("run: no command given (hwcaps-fs run --root ROOT -- CMD [ARGS...])")
    options = parse_mount_options(args.options, is_root=os.geteuid() == 0)
    run(RunConfig(
        root=args.root,
        mountpoint=args.mountpoint,
        command=command,
        detect_options=detect_options(args, options.level),
        mount_options=options,
        layout=_layout(args.layout) or options.layout,
    ))


HANDLERS = {
    "levels": _run_levels,
    "which": _run_which,
    "check": _run_check,
    "compare": _run_compare,
    "mount": _run_mount,
    "umount": _run_umount,
    "run": _run_run,
}


def _program_arguments(argv: list[str]) -> tuple[list[str], list[str]]:
    """``compare``'s own arguments and, after the first ``--``, the program's (kept apart
    from argparse, which cannot leave ``--json`` alone after positionals)."""
    if argv[:1] == ["compare"] and "--" in argv:
        split = argv.index("--")
        return argv[:split], argv[split + 1 :]
    return argv, []


def main(argv: Sequence[str] | None = None) -> int:
    arguments, program_args = _program_arguments(
        _mount_helper_form(sys.argv[1:] if argv is None else argv))
    try:
        args = build_parser().parse_args(arguments)
        args.program_args = program_args
        return HANDLERS[args.command](args)
    except HwcapsFsError as error:
        print(f"hwcaps-fs: {show(str(error))}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as error:
        if os.environ.get("HWCAPS_FS_DEBUG"):
            raise
        print(f"hwcaps-fs: internal error: {type(error).__name__}: {show(str(error))} "
              "(HWCAPS_FS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
