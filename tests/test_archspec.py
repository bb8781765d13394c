"""archspec, optional: with it, a name for the microarchitecture and a cross-check of the x86
level; without it (Debian 12 has no package of it), the same detection with neither, and no
warning about its absence."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_cpu_fixtures import FIXTURES, X86_CASES, run

HAVE_ARCHSPEC = importlib.util.find_spec("archspec") is not None
needs_archspec = pytest.mark.skipif(
    not HAVE_ARCHSPEC, reason="archspec is not installed (optional: pip install '.[archspec]')")

#: archspec's name for each fixture's CPU (archspec 0.2.7).
NAMES = {
    "aarch64-neoverse-n1": "neoverse_n1",
    "atom-bonnell-d525": "core2",
    "core2-penryn-e8400": "core2",
    "haswell-xeon-e5-2680v3": "haswell",
    "k10-opteron-6136": "k10",
    "nehalem-core-i7-920": "nehalem",
    "power10": "power10le",
    "power8-nvl": "power8le",
    "power9": "power9le",
    "s390x-z13": "s390x",
    "s390x-z16": "s390x",
    "sandybridge-xeon-e5-2670": "sandybridge",
    "skylake-x-xeon-gold-6132": "skylake_avx512",
    "zen3-ryzen-5950x": "zen3",
    "zen4-epyc-9654": "zen4",
    "zhaoxin-kx-u6780a": "x86_64_v3",
}
#: The x86 fixtures on whose level archspec's generic target and glibc's rules agree.
AGREEING = [case[:2] for case in X86_CASES if case[0] != "zhaoxin-kx-u6780a"]

#: Makes ``import archspec`` fail, as on a system without it.
WITHOUT_ARCHSPEC = "import sys; sys.modules['archspec'] = None; "


@pytest.fixture
def no_archspec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "archspec", None)
    monkeypatch.setitem(sys.modules, "archspec.cpu", None)


@needs_archspec
@pytest.mark.parametrize(("fixture", "name"), sorted(NAMES.items()))
def test_archspec_names_the_microarchitecture(tmp_path: Path, fixture: str, name: str) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert found.microarchitecture == name
    assert not any(w.startswith("archspec failed") for w in found.warnings)


@needs_archspec
@pytest.mark.parametrize(("fixture", "level"), AGREEING)
def test_archspec_agrees_with_glibc_on_x86(tmp_path: Path, fixture: str, level: str) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert any(s.source == "archspec" and s.outcome == f"agrees: {level}" for s in found.steps)


@needs_archspec
def test_archspec_disagreeing_is_a_warning(tmp_path: Path) -> None:
    """archspec takes the KX-6000's avx2 at its word; glibc does not (see test_cpu_fixtures)."""
    found = run(tmp_path, cpuinfo=str(FIXTURES / "zhaoxin-kx-u6780a"))
    assert found.level == "x86-64-v2"
    assert any("archspec" in w and "x86-64-v3" in w for w in found.warnings)


@needs_archspec
def test_archspec_names_this_machine(tmp_path: Path) -> None:
    assert run(tmp_path).microarchitecture


@pytest.mark.parametrize(("fixture", "level"), [case[:2] for case in X86_CASES])
def test_without_archspec_the_level_is_the_same(
    tmp_path: Path, no_archspec: None, fixture: str, level: str
) -> None:
    found = run(tmp_path, cpuinfo=str(FIXTURES / fixture))
    assert found.level == level
    assert found.microarchitecture is None
    assert not any(step.source == "archspec" for step in found.steps)
    assert not any("archspec" in warning for warning in found.warnings)


def test_without_archspec_levels_says_nothing_of_it() -> None:
    """The command a Debian 12 user runs: exit 0, no warning, no archspec line."""
    done = subprocess.run(
        [sys.executable, "-c",
         WITHOUT_ARCHSPEC + "from hwcaps_fs.commands.cli import main; sys.exit(main(['levels']))"],
        capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    assert "archspec" not in done.stdout
