"""Where tests put what other users and setuid programs must reach: pytest's temporary
directories are 0700, a clone may be in /root (0700), and /tmp may be nosuid."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import Distribution
from pathlib import Path

import pytest

from tests.users import AS_NOBODY


def public_temporary_directory(prefix: str) -> Path:
    """A new directory every user can traverse (pytest's own are 0700), on a file system
    where setuid programs keep their privileges: /tmp, unless it is mounted nosuid or noexec
    (Debian 13, Fedora, Arch), else /var/tmp. The caller removes it."""
    for parent in ("/tmp", "/var/tmp"):
        if not os.statvfs(parent).f_flag & (os.ST_NOSUID | os.ST_NOEXEC):
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            path.chmod(0o755)
            return path
    pytest.skip("/tmp and /var/tmp are both nosuid or noexec: no place for setuid tests")


@dataclass(frozen=True)
class OthersPython:
    """How a user other than root runs this checkout's ``python -m hwcaps_fs``."""

    argv: list[str]
    env: dict[str, str]


def _distributions(name: str, seen: dict[str, Distribution]) -> dict[str, Distribution]:
    """``name``'s installed distribution and, recursively, those it requires (the optional
    ones too, as installed, but not the test tools)."""
    key = re.sub(r"[-_.]+", "-", name).lower()
    if key in seen:
        return seen
    try:
        seen[key] = importlib.metadata.distribution(name)
    except importlib.metadata.PackageNotFoundError:
        return seen
    for requirement in seen[key].requires or []:
        if "extra == \"test\"" not in requirement:
            requirement_name = re.match(r"[A-Za-z0-9._-]+", requirement)
            if requirement_name:
                _distributions(requirement_name.group(), seen)
    return seen


@contextmanager
def python_for_others() -> Iterator[OthersPython]:
    """``python -m hwcaps_fs`` for ``nobody``: this interpreter and checkout when every user
    can read them; else (a clone in /root, mode 0700) the base interpreter with a copy, in a
    public directory, of hwcaps_fs and of the installed distributions it requires."""
    checkout = Path(__file__).resolve().parents[1]
    here = OthersPython([sys.executable], {**os.environ, "PYTHONPATH": str(checkout)})
    probe = subprocess.run([*AS_NOBODY, *here.argv, "-c",
                            "import hwcaps_fs.commands.cli, pyfuse3, trio"],
                           env=here.env, cwd="/", capture_output=True, check=False)
    if probe.returncode == 0:
        yield here
        return
    copy = public_temporary_directory("hwcaps-fs-python-")
    try:
        shutil.copytree(checkout / "hwcaps_fs", copy / "hwcaps_fs",
                        ignore=shutil.ignore_patterns("__pycache__"))
        for key, distribution in _distributions("hwcaps-fs", {}).items():
            for file in distribution.files or []:
                # hwcaps-fs itself: only its metadata (the package is the checkout's, above)
                if ".." in file.parts or "__pycache__" in file.parts or (
                        key == "hwcaps-fs" and not file.parts[0].endswith(".dist-info")):
                    continue
                target = copy / file
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(str(distribution.locate_file(file))), target)
        for path in [copy, *copy.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        yield OthersPython([getattr(sys, "_base_executable", sys.executable)],
                           {**os.environ, "PYTHONPATH": str(copy)})
    finally:
        shutil.rmtree(copy, ignore_errors=True)
