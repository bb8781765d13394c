"""The soak of bench/soak.py, short: parallel execs through a real mount while the store is
churned, with no failed, wrong-level or stale exec, and nothing left behind.

The soak runs as ``make soak`` runs it (``python -m bench.soak`` from the repository root), in a
subprocess.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.builders import gcc_available
from tests.mounting import DEADLINE, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.mount]

REPO = Path(__file__).resolve().parents[1]


def soak_command(tmp_path: Path, seconds: int) -> list[str]:
    if not gcc_available():
        pytest.skip("gcc is not installed: cannot build the soak's programs")
    return [sys.executable, "-m", "bench.soak", "--seconds", str(seconds), "--tmp", str(tmp_path),
            "--out", str(tmp_path / "results.md")]


def mounts_under(path: Path) -> list[str]:
    """Mountpoints at or below ``path`` (from /proc/self/mounts)."""
    points = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    return [point for point in points if point.startswith(str(path))]


def test_soak_has_no_failed_wrong_level_or_stale_exec(fuse_ok: None, tmp_path: Path) -> None:
    result = subprocess.run(soak_command(tmp_path, 15), capture_output=True, text=True,
                            timeout=300, check=False, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    results = (tmp_path / "results.md").read_text()
    assert "| failed execs (name present throughout) | 0 |" in results
    assert "| wrong-level execs | 0 |" in results
    assert "| dpkg burst (names) |" in results
    assert "| storm upgrade |" in results
    assert "| package removal (names) |" in results
    assert "| execs | 0 " not in results
    assert "PASS" in results
    assert [p.name for p in tmp_path.iterdir()] == ["results.md"]
    assert mounts_under(tmp_path) == []


def test_soak_interrupted_leaves_nothing_behind(fuse_ok: None, tmp_path: Path) -> None:
    soak = subprocess.Popen(soak_command(tmp_path, 600), stdout=subprocess.DEVNULL, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: bool(mounts_under(tmp_path)), 120, "the soak's mount")
        time.sleep(1)
        soak.send_signal(signal.SIGTERM)
        _, stderr = soak.communicate(timeout=DEADLINE * 4)
    finally:
        if soak.poll() is None:
            soak.kill()
            soak.wait(DEADLINE)
    assert soak.returncode == 130, stderr
    assert "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []
    assert mounts_under(tmp_path) == []
