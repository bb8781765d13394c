"""The daemon as systemd and a container see it: log lines with their priority and no
doubled name under the journal, STATUS= with READY=1, and run's warnings on stderr where
there is no syslog."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hwcaps_fs.system.logs import JournalFormatter, priority
from tests.builders import variant_store
from tests.mounting import DEADLINE, ENVIRONMENT, mounted


def test_priorities_are_syslog_s() -> None:
    assert [priority(level) for level in (logging.DEBUG, logging.INFO, logging.WARNING,
                                          logging.ERROR, logging.CRITICAL)] == [7, 6, 4, 3, 2]
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "%s", ("one",), None)
    try:
        raise ValueError("traceback")
    except ValueError:
        record.exc_info = sys.exc_info()
    lines = JournalFormatter("%(message)s").format(record).splitlines()
    assert lines[0] == "<4>one" and len(lines) > 2
    assert all(line.startswith("<4>") for line in lines)
    # A newline in a message is data (a file name): quoted, never a second line.
    record = logging.LogRecord("x", logging.WARNING, __file__, 1, "two\nlines", None, None)
    assert JournalFormatter("%(message)s").format(record) == "<4>'two\\nlines'"


def unusable_variant(store: Path, level: str, name: str) -> Path:
    """A variant at ``level`` that is not executable: served is the next one down, with a
    warning."""
    path = store / "glibc-hwcaps" / level / "bin" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o644)
    return path


def test_under_the_journal_lines_carry_their_priority(fuse_ok: None, binaries: Path,
                                                     tmp_path: Path, level: str) -> None:
    if level == "baseline":
        pytest.skip("this CPU has no level above the baseline: nothing to skip")
    store = variant_store(binaries, tmp_path / "store", "bin/prog")
    unusable_variant(store, level, "prog")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt, journal=True) as mount:
        pass
    lines = mount.log_text().splitlines()
    assert f"<4>glibc-hwcaps/{level}/bin/prog: skipped: not executable (mode 0644)" in lines
    assert any(re.fullmatch(r"<6>serving .* level \S+ \(decided by .*\), 1 names, "
                            r"exec path: .+", line)
               for line in lines), lines
    assert not [line for line in lines if "hwcaps-fs[" in line or not line.startswith("<")]


def test_elsewhere_lines_say_who_wrote_them(fuse_ok: None, binaries: Path,
                                            tmp_path: Path) -> None:
    store = variant_store(binaries, tmp_path / "store", "bin/prog")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        pass
    assert re.search(r"^hwcaps-fs\[\d+\]: INFO: serving ", mount.log_text(), re.MULTILINE)


def test_ready_comes_with_a_status(fuse_ok: None, binaries: Path, tmp_path: Path,
                                   level: str) -> None:
    store = variant_store(binaries, tmp_path / "store", "bin/prog")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with mounted(store, mnt) as mount:
        fields = dict(line.split("=", 1) for line in mount.notified.splitlines())
    assert fields["READY"] == "1"
    assert fields["STATUS"].startswith(f"serving {store} at {mnt}: level {level} (decided by ")
    assert re.search(r"\), 1 names, exec path: (zero-request|one request per exec) \(",
                     fields["STATUS"])


def test_run_warns_on_stderr_without_syslog(fuse_ok: None, binaries: Path, tmp_path: Path,
                                            level: str) -> None:
    """A warning the detached daemon logs while CMD runs (here: a variant added to the store
    that is not executable) reaches CMD's stderr when there is no /dev/log to take it."""
    if level == "baseline":
        pytest.skip("this CPU has no level above the baseline: nothing to skip")
    if shutil.which("unshare") is None:
        pytest.skip("unshare is not installed")
    store = variant_store(binaries, tmp_path / "store", "bin/prog")
    view = tmp_path / "view"
    late = store / "glibc-hwcaps" / level / "bin" / "late"
    # The daemon logs the skip when it sees the new file; CMD waits for the line.
    command = (f'printf "#!/bin/sh\\n" > "{late}"; chmod 644 "{late}"; '
               f'for i in $(seq 100); do grep -q late "$LOG" && exit 0; sleep 0.1; done; exit 9')
    no_syslog = '[ ! -e /dev/log ] || mount --bind /dev/null /dev/log; exec "$@"'
    log = tmp_path / "stderr"
    with log.open("wb") as stderr:
        result = subprocess.run(
            ["unshare", "--mount", "sh", "-c", no_syslog, "sh", sys.executable, "-m",
             "hwcaps_fs", "run", "--root", str(store), "--mountpoint", str(view), "--",
             "sh", "-c", command],
            stdout=subprocess.PIPE, stderr=stderr, timeout=DEADLINE, check=False,
            env={**ENVIRONMENT, "LOG": str(log)}, cwd="/")
    text = log.read_text()
    assert result.returncode == 0, text
    assert re.search(rf"^hwcaps-fs\[\d+\]: WARNING: glibc-hwcaps/{level}/bin/late: skipped: "
                     r"not executable \(mode 0644\)$", text, re.MULTILINE), text
