"""Real variant binaries for tests, compiled with gcc (cached per session by conftest).

Each program prints the level it was built for, so a test can exec a name through a store or
a mount and see which variant ran.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

#: gcc -march value for each x86-64 level name used in stores.
MARCH = {
    "baseline": "x86-64",
    "x86-64-v1": "x86-64",
    "x86-64-v2": "x86-64-v2",
    "x86-64-v3": "x86-64-v3",
    "x86-64-v4": "x86-64-v4",
}

PRINT_LEVEL = r"""
#include <stdio.h>
int main(void) { puts("%s"); return 0; }
"""

# A setuid test program: prints the effective user id it runs with.
PRINT_EUID = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("euid=%d\n", (int)geteuid()); return 0; }
"""


def gcc_available() -> bool:
    return shutil.which("gcc") is not None


def gcc(out: Path, source: Path, *flags: str) -> Path:
    """Compile the C file ``source`` to ``out`` (-O2, then ``flags``); raises
    CalledProcessError on failure."""
    out.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["gcc", "-O2", "-o", str(out), str(source), *flags], check=True,
                   capture_output=True, text=True)
    return out


def compile_c(source: str, out: Path, flags: list[str]) -> Path:
    """Compile C ``source`` (text) to ``out`` with ``flags``."""
    out.parent.mkdir(parents=True, exist_ok=True)
    src = out.with_suffix(".c")
    src.write_text(source)
    gcc(out, src, *flags)
    src.unlink()
    return out


def compile_level(cache: Path, level: str, text: str | None = None, mark: str | None = None,
                  march: str | None = None, static: bool = False) -> Path:
    """A program built with ``-march`` for ``level`` that prints ``text`` (default: level).

    ``mark`` is None (no explicit ISA note beyond what crt objects add), ``"mneeded"`` or
    ``"z"``; ``march`` overrides the -march of the level (to misplace a binary on purpose).
    Results are cached in ``cache`` by their inputs.
    """
    arch = march or MARCH[level]
    flags = [f"-march={arch}"]
    if mark == "mneeded":
        flags.append("-mneeded")
    elif mark == "z":
        z_level = "baseline" if arch == "x86-64" else arch
        flags.append(f"-Wl,-z,{z_level}")
    if static:
        flags.append("-static")
    body = PRINT_LEVEL % (text or level)
    key = hashlib.sha256(repr((body, flags)).encode()).hexdigest()[:16]
    out = cache / f"{level}-{key}"
    if not out.exists():
        compile_c(body, out, flags)
    return out


def install(binary: Path, dest: Path, mode: int = 0o755) -> Path:
    """Copy ``binary`` to ``dest`` (creating directories) with ``mode``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(binary, dest)
    dest.chmod(mode)
    return dest


def variant_store(binaries: Path, root: Path, relpath: str,
                  levels: tuple[str, ...] = ("x86-64-v2", "x86-64-v3", "x86-64-v4")) -> Path:
    """A glibc-layout store at ``root``: ``relpath`` as the baseline and as a variant at each
    of ``levels``, every build printing its level and marked with -mneeded."""
    install(compile_level(binaries, "baseline", mark="mneeded"), root / relpath)
    for level in levels:
        install(compile_level(binaries, level, mark="mneeded"),
                root / "glibc-hwcaps" / level / relpath)
    return root
