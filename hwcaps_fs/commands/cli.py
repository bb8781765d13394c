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
from collections.abc import Sequence
from typing import NoReturn

from hwcaps_fs import __version__
from hwcaps_fs.commands import report
from hwcaps_fs.commands.check import Severity, check
from hwcaps_fs.core.model import Layout, Store
from hwcaps_fs.core.resolve import resolve
from hwcaps_fs.detect.cpu import Detection, DetectOptions, detect
from hwcaps_fs.errors import HwcapsFsError, UsageError
from hwcaps_fs.store.scan import scan

#: Exit status for a bug (sysexits EX_SOFTWARE), so it is never mistaken for a user error.
EXIT_INTERNAL = 70
COMMANDS = ("levels", "which", "check", "mount", "umount", "run")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line (raised, so main() prints them)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def _detect_arguments() -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("level detection")
    group.add_argument("--level", "--max-level", dest="level", metavar="LEVEL",
                       help="highest level to use: lowers what the CPU supports, never raises it")
    group.add_argument("--force-level", metavar="LEVEL",
                       help="use exactly LEVEL, even above what the CPU supports (risks SIGILL)")
    group.add_argument("--cpuinfo", metavar="FILE",
                       help="compute the level from this /proc/cpuinfo instead of asking ld.so")
    group.add_argument("--auxv", metavar="FILE",
                       help="aux vector for --cpuinfo (AT_HWCAP/AT_HWCAP2 on ppc64le, s390x)")
    group.add_argument("--machine", metavar="MACHINE",
                       help="architecture of --cpuinfo, as uname -m says it (default: guessed)")
    group.add_argument("--config", metavar="FILE", default="/etc/hwcaps-fs.toml",
                       help="configuration file (default: %(default)s)")
    return parent


def _layout_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layout", choices=[layout.value for layout in Layout],
                        help="store layout (default: detected)")


def _json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="machine-readable output")


def build_parser() -> argparse.ArgumentParser:
    detect_parent = _detect_arguments()
    parser = _Parser(
        prog="hwcaps-fs",
        description="glibc-hwcaps for executables: each name runs the best build this CPU can.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True

    levels = commands.add_parser("levels", parents=[detect_parent],
                                 help="show the CPU's levels and how they were found")
    _json_argument(levels)

    which = commands.add_parser("which", parents=[detect_parent],
                                help="show what RELPATH serves and why others were skipped")
    which.add_argument("root", metavar="ROOT")
    which.add_argument("relpath", metavar="RELPATH")
    _layout_argument(which)
    _json_argument(which)

    check = commands.add_parser("check", parents=[detect_parent],
                                help="lint a store for packaging errors")
    check.add_argument("root", metavar="ROOT")
    _layout_argument(check)
    _json_argument(check)

    mount = commands.add_parser("mount", parents=[detect_parent], help="mount the view")
    mount.add_argument("--root", metavar="ROOT", help="the store (default: MOUNTPOINT, in place)")
    mount.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                       help="comma-separated mount options (see README.md)")
    mount.add_argument("-f", "--foreground", action="store_true",
                       help="serve in the foreground (sends READY=1 to $NOTIFY_SOCKET)")
    mount.add_argument("paths", nargs="+", metavar="[ROOT] MOUNTPOINT",
                       help="as mount(8): ROOT MOUNTPOINT is --root ROOT MOUNTPOINT")
    _layout_argument(mount)

    umount = commands.add_parser("umount", help="unmount a view")
    umount.add_argument("mountpoint", metavar="MOUNTPOINT")

    run = commands.add_parser("run", parents=[detect_parent],
                              help="mount the view, then exec CMD (a container entrypoint)")
    run.add_argument("--root", metavar="ROOT", required=True, help="the store")
    run.add_argument("--mountpoint", metavar="DIR",
                     help="where the view appears (default: a private directory)")
    run.add_argument("-o", dest="options", action="append", default=[], metavar="OPTS",
                     help="comma-separated mount options (see README.md)")
    _layout_argument(run)
    run.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    return parser


def _mount_helper_form(argv: Sequence[str]) -> list[str]:
    """Rewrite ``SOURCE MOUNTPOINT -o OPTS`` (how mount.fuse3 calls us) as ``mount``."""
    if len(argv) >= 2 and argv[0] not in COMMANDS and not argv[0].startswith("-"):
        return ["mount", "--root", argv[0], *argv[1:]]
    return list(argv)


def detect_options(args: argparse.Namespace, level: str | None = None) -> DetectOptions:
    return DetectOptions(
        max_level=level or args.level,
        force_level=args.force_level,
        cpuinfo=args.cpuinfo,
        auxv=args.auxv,
        machine=args.machine,
        environ=dict(os.environ),
        config=args.config,
    )


def _layout(value: str | None) -> Layout | None:
    return Layout(value) if value else None


def _run_levels(args: argparse.Namespace) -> int:
    detection = detect(detect_options(args))
    report.emit(report.levels(detection), args.json)
    return 0


def _scan(args: argparse.Namespace, detection: Detection) -> Store:
    return scan(args.root, detection.architecture, _layout(args.layout))


def _run_which(args: argparse.Namespace) -> int:
    detection = detect(detect_options(args))
    store = _scan(args, detection)
    relpath = args.relpath.strip("/")
    resolution = resolve(relpath, store.candidates(relpath),
                         detection.target(require_trusted=os.geteuid() == 0))
    report.emit(report.which(detection, store, resolution), args.json)
    return 0 if resolution.served else 1


def _run_check(args: argparse.Namespace) -> int:
    detection = detect(detect_options(args))
    store = _scan(args, detection)
    findings = check(store, detection.target(require_trusted=True))
    report.emit(report.check(store, findings), args.json)
    return 1 if any(finding.severity is Severity.ERROR for finding in findings) else 0


def _run_mount(args: argparse.Namespace) -> int:
    from hwcaps_fs.commands.mount import mount
    from hwcaps_fs.core.mount_options import parse_mount_options
    from hwcaps_fs.system.preflight import MountConfig

    options = parse_mount_options(args.options, is_root=os.geteuid() == 0)
    root, mountpoint = _root_and_mountpoint(args.root, args.paths)
    config = MountConfig(
        root=root,
        mountpoint=mountpoint,
        options=options,
        detect_options=detect_options(args, level=options.level),
        layout=_layout(args.layout) or options.layout,
        foreground=args.foreground,
    )
    mount(config)
    return 0


def _root_and_mountpoint(root: str | None, paths: list[str]) -> tuple[str, str]:
    """``[--root ROOT] MOUNTPOINT``, or ``ROOT MOUNTPOINT`` in mount(8)'s order."""
    if len(paths) == 1:
        return root or paths[0], paths[0]
    if len(paths) == 2 and root is None:
        return paths[0], paths[1]
    raise UsageError(f"mount: expected [--root ROOT] MOUNTPOINT or ROOT MOUNTPOINT, got "
                     f"{' '.join(paths)}" + (f" with --root {root}" if root else ""))


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
        detect_options=detect_options(args, level=options.level),
        mount_options=options,
        layout=_layout(args.layout) or options.layout,
    ))


HANDLERS = {
    "levels": _run_levels,
    "which": _run_which,
    "check": _run_check,
    "mount": _run_mount,
    "umount": _run_umount,
    "run": _run_run,
}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = _mount_helper_form(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(arguments)
        return HANDLERS[args.command](args)
    except HwcapsFsError as error:
        print(f"hwcaps-fs: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as error:
        if os.environ.get("HWCAPS_FS_DEBUG"):
            raise
        print(f"hwcaps-fs: internal error: {type(error).__name__}: {error} "
              "(HWCAPS_FS_DEBUG=1 shows the traceback)", file=sys.stderr)
        return EXIT_INTERNAL
