"""Bash completion for ``hwcaps-fs``, written from the command line's own parser, so that it
completes exactly the commands and options that exist:

    python -m hwcaps_fs.commands.completion build/completion/hwcaps-fs      (make completion)

Each option's value is completed by the kind its metavar names (:data:`VALUE_KINDS`): level
names and machines from the level tables, ``-o`` options from the documented table, files
and directories by bash. After ``run ... --`` bash completes a command.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from hwcaps_fs.commands.cli import COMMANDS, build_parser, subcommands
from hwcaps_fs.core.levels import ARCHITECTURES
from hwcaps_fs.core.mount_options import DOCUMENTED

#: How the value of an option (or a positional) with this metavar is completed: ``@file``,
#: ``@directory``, ``@command``, or the words to offer.
VALUE_KINDS: dict[str, str | tuple[str, ...]] = {
    "LEVEL": ("baseline", *sorted({name for arch in ARCHITECTURES for name in arch.level_names})),
    "MACHINE": tuple(sorted(machine for arch in ARCHITECTURES for machine in arch.machines)),
    "OPTS": tuple(name.split("=")[0] + ("=" if "=" in name else "") for name, _ in DOCUMENTED),
    "FILE": "@file",
    "ROOT": "@directory",
    "DIR": "@directory",
    "MOUNTPOINT": "@directory",
    "RELPATH": "@file",
    "SECONDS": (),
    "N": (),
    "FRACTION": (),
    "-- CMD [ARGS...]": "@command",
}


def value_kind(action: argparse.Action) -> str | tuple[str, ...]:
    """How ``action``'s value is completed: its choices, else its metavar's kind."""
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        return tuple(map(str, action.choices))
    return VALUE_KINDS[str(action.metavar)]


def _bash_words(kind: str | tuple[str, ...]) -> str:
    return kind if isinstance(kind, str) else shlex.quote(" ".join(kind))


def script() -> str:
    """The completion script: a table per command, then one function that reads them."""
    parser = build_parser()
    lines = ["# bash completion for hwcaps-fs, generated from its parser by "
             "python -m hwcaps_fs.commands.completion",
             "",
             f"_hwcaps_fs_commands={shlex.quote(' '.join(COMMANDS))}",
             "",
             "# _hwcaps_fs_options_COMMAND: its options; _hwcaps_fs_value: how the value of an",
             "# option is completed (words, or @file, @directory, @command), by COMMAND:OPTION;",
             "# _hwcaps_fs_positionals_COMMAND: the same for its positionals, in order.",
             "declare -A _hwcaps_fs_value"]
    for name, sub in subcommands(parser).items():
        options: list[str] = []
        positionals: list[str] = []
        for action in sub._actions:
            if action.option_strings:
                options += action.option_strings
                if action.nargs != 0 and not isinstance(action, argparse._HelpAction):
                    kind = _bash_words(value_kind(action))
                    lines += [f"_hwcaps_fs_value[{name}:{option}]={kind}"
                              for option in action.option_strings]
            else:
                positionals.append(_bash_words(value_kind(action)))
        variable = name.replace("-", "_")
        lines.append(f"_hwcaps_fs_options_{variable}={shlex.quote(' '.join(options))}")
        lines.append(f"_hwcaps_fs_positionals_{variable}=({' '.join(positionals)})")
    lines += ["", BASH_FUNCTION]
    return "\n".join(lines) + "\n"


BASH_FUNCTION = r'''_hwcaps_fs_complete_kind() {
    local kind=$1 cur=$2
    case $kind in
        @file) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -f -- "$cur")) ;;
        @directory) compopt -o filenames 2>/dev/null; COMPREPLY=($(compgen -d -- "$cur")) ;;
        @command) COMPREPLY=($(compgen -c -- "$cur")) ;;
        *) COMPREPLY=($(compgen -W "$kind" -- "$cur")) ;;
    esac
}

_hwcaps_fs() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    COMPREPLY=()
    if ((COMP_CWORD == 1)); then
        COMPREPLY=($(compgen -W "$_hwcaps_fs_commands --help --version" -- "$cur"))
        return
    fi
    local command=${COMP_WORDS[1]} i word positional=0
    [[ " $_hwcaps_fs_commands " == *" $command "* ]] || return
    local -n options=_hwcaps_fs_options_$command
    local -n positionals=_hwcaps_fs_positionals_$command
    # Count the positionals before the cursor; after "run ... --", a command and its files.
    for ((i = 2; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        if [[ $word == -- && $command == run ]]; then
            if ((i == COMP_CWORD - 1)); then _hwcaps_fs_complete_kind @command "$cur"
            else _hwcaps_fs_complete_kind @file "$cur"; fi
            return
        elif [[ $word == -* ]]; then
            [[ -n ${_hwcaps_fs_value[$command:$word]+set} ]] && ((i++))
        else
            ((positional++))
        fi
    done
    if [[ -n ${_hwcaps_fs_value[$command:$prev]+set} ]]; then
        local kind=${_hwcaps_fs_value[$command:$prev]}
        if [[ $prev == -o ]]; then
            # comma-separated: complete the last word, keep what precedes it
            local head=${cur%,*}, last=${cur##*,}
            [[ $cur == *,* ]] || head=
            compopt -o nospace 2>/dev/null
            COMPREPLY=($(compgen -P "$head" -W "$kind" -- "$last"))
        else
            _hwcaps_fs_complete_kind "$kind" "$cur"
        fi
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$options" -- "$cur"))
    elif ((positional < ${#positionals[@]})); then
        _hwcaps_fs_complete_kind "${positionals[positional]}" "$cur"
    fi
}

complete -F _hwcaps_fs hwcaps-fs'''


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hwcaps_fs.commands.completion",
                                     description="write hwcaps-fs's bash completion")
    parser.add_argument("output", type=Path, help="the file to write "
                                                  "(e.g. build/completion/hwcaps-fs)")
    args = parser.parse_args(argv)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(script())
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
