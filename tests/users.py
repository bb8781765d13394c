"""Real non-root users for security tests: created for one test, removed afterwards.

An attacker in these tests is a local account with a shell and write access somewhere, so it
is a real user made with useradd (``nobody`` would do for reading, but owning files needs a
user of one's own). Names carry the test process's pid, so parallel runs never share one.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

#: Upper bound for one command run as the user.
TIMEOUT = 15.0

#: Runs the rest of a command line as ``nobody``, as that user would: runuser drops every
#: privilege before it looks the program up. (``setpriv --reuid`` does the lookup of the
#: program it execs with root's capabilities still in effect, so it runs a program in a
#: directory only root may search: nothing it runs proves what a user may do.)
AS_NOBODY = ("runuser", "-u", "nobody", "--")


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int

    def run(self, *command: str | Path, check: bool = False) -> subprocess.CompletedProcess[str]:
        """``command`` run as this user (runuser: a fresh login-less session, no privileges)."""
        return subprocess.run(["runuser", "-u", self.name, "--", *map(str, command)],
                              capture_output=True, text=True, errors="replace", timeout=TIMEOUT,
                              check=check, cwd="/")

    def owns(self, path: Path) -> Path:
        """Give ``path`` to this user (as an attacker's home or a directory they were given)."""
        os.chown(path, self.uid, self.gid)
        return path


def missing_tools() -> str | None:
    """Why users cannot be made here, or None."""
    for tool in ("useradd", "userdel", "runuser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@contextlib.contextmanager
def temporary_user(prefix: str = "hwtrust") -> Iterator[User]:
    """A new user with its own group and no home directory, deleted on the way out."""
    name = f"{prefix}{os.getpid()}{secrets.token_hex(2)}"
    subprocess.run(["useradd", "--no-create-home", "--user-group", "--shell", "/bin/sh", name],
                   check=True, capture_output=True, timeout=TIMEOUT)
    try:
        entry = pwd.getpwnam(name)
        yield User(name, entry.pw_uid, entry.pw_gid)
    finally:
        subprocess.run(["userdel", name], check=False, capture_output=True, timeout=TIMEOUT)
