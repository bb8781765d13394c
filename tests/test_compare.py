"""``hwcaps-fs compare``: the statistics, the plan, and real runs of real builds.

The advice is tested on builds whose speed is known by construction (the same loop run a
different number of times), so each verdict is reached on any CPU and under load; the demo
and a real program (zlib's ``enough`` and ``zpipe``, from the sources Debian ships in
zlib1g-dev) are compared at every level this CPU runs.
"""

from __future__ import annotations

import json
import os
import pty
import random
import select
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from hwcaps_fs.commands.compare import plan
from hwcaps_fs.commands.report import SCHEMA
from hwcaps_fs.core import stats
from hwcaps_fs.core.levels import X86_64
from hwcaps_fs.store.scan import scan
from tests.builders import MARCH, compile_c, install, variant_store
from tests.mounting import ENVIRONMENT
from tests.test_cli import machine_level
from tests.test_json import documented, fields
from tests.test_resolve import target

REPO = Path(__file__).resolve().parents[1]
ZLIB_EXAMPLES = Path("/usr/share/doc/zlib1g-dev/examples")
QUICK = ["--budget", "4", "--min-rounds", "3", "--max-rounds", "40"]

#: A program whose run time is set at build time (LOOPS) and whose output is not.
LOOP = r"""
#include <stdio.h>
int main(void) {
    volatile unsigned long x = 0;
    for (unsigned long i = 0; i < LOOPS; i++) x += i;
    puts("done");
    return STATUS;
}
"""


def compare(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "hwcaps_fs", "compare", *args], input=stdin,
                          stdin=None if stdin is not None else subprocess.DEVNULL,
                          capture_output=True, timeout=120, env=ENVIRONMENT, check=False)


def compare_json(*args: str, stdin: bytes | None = None) -> tuple[int, dict[str, object]]:
    result = compare("--json", *args, stdin=stdin)
    assert result.returncode in (0, 1), result.stderr.decode()
    data: dict[str, object] = json.loads(result.stdout)
    return result.returncode, data


def needs_level(level: str) -> None:
    have = machine_level()
    if have == "baseline" or X86_64.rank(have) < X86_64.rank(level):
        pytest.skip(f"this CPU does not run {level} (it runs {have})")


def loop_store(root: Path, binaries: Path, loops: dict[str, int],
               status: dict[str, int] | None = None) -> Path:
    """bin/loop at each level of ``loops`` ("baseline" = bin/), LOOPS iterations each."""
    for level, count in loops.items():
        code = (status or {}).get(level, 0)
        flags = [f"-march={MARCH[level]}", f"-DLOOPS={count}UL", f"-DSTATUS={code}"]
        built = compile_c(LOOP, binaries / f"loop-{level}-{count}-{code}", flags)
        where = "bin/loop" if level == "baseline" else f"glibc-hwcaps/{level}/bin/loop"
        install(built, root / where)
    return root


# -- statistics ------------------------------------------------------------------------------


def test_speedup_estimate_and_interval() -> None:
    rng = random.Random(1)
    slow = [2.0 * rng.uniform(0.95, 1.05) for _ in range(40)]
    fast = [1.0 * rng.uniform(0.95, 1.05) for _ in range(40)]
    ratio = stats.speedup(slow, fast)
    assert ratio.low < ratio.estimate < ratio.high
    assert ratio.low > 1.9 and ratio.high < 2.1
    assert stats.verdict(ratio, 0.02) is stats.Verdict.FASTER
    assert stats.verdict(stats.speedup(fast, slow), 0.02) is stats.Verdict.SLOWER


def test_equal_samples_are_the_same_and_tiny_samples_unclear() -> None:
    rng = random.Random(2)
    a = [1.0 + rng.uniform(-0.002, 0.002) for _ in range(60)]
    b = [1.0 + rng.uniform(-0.002, 0.002) for _ in range(60)]
    assert stats.verdict(stats.speedup(a, b), 0.02) is stats.Verdict.SAME
    tiny = stats.speedup([1.0, 1.1], [1.05, 0.9])
    assert tiny.low == 0.0 and tiny.high == float("inf")
    assert stats.verdict(tiny, 0.02) is stats.Verdict.UNCLEAR


def test_summary_quartiles() -> None:
    summary = stats.summarize([5.0, 1.0, 3.0, 2.0, 4.0])
    assert (summary.median, summary.q1, summary.q3, summary.low, summary.high) == (
        3.0, 2.0, 4.0, 1.0, 5.0)


# -- the plan ----------------------------------------------------------------------------------


def test_plan_runs_what_each_level_would_serve(tmp_path: Path, binaries: Path) -> None:
    variant_store(binaries, tmp_path, "bin/prog", levels=("x86-64-v2", "x86-64-v4"))
    store = scan(str(tmp_path), X86_64)
    on_v3 = plan("bin/prog", store, target("x86-64-v3"))
    assert [c.level for c in on_v3.contenders] == ["baseline", "x86-64-v2"]
    assert on_v3.served == "x86-64-v2"
    assert [(level, path) for level, path, _ in on_v3.left_out] == [
        ("x86-64-v4", "glibc-hwcaps/x86-64-v4/bin/prog")]
    assert "not supported by this CPU" in on_v3.left_out[0][2]
    assert [c.level for c in plan("bin/prog", store, target(None)).contenders] == ["baseline"]


# -- real runs -----------------------------------------------------------------------------------


def test_a_faster_variant_is_worth_shipping(tmp_path: Path, binaries: Path) -> None:
    needs_level("x86-64-v2")
    root = loop_store(tmp_path, binaries, {"baseline": 6_000_000, "x86-64-v2": 1_500_000})
    code, data = compare_json(*QUICK, str(root), "bin/loop")
    assert code == 0
    assert data["schema"] == SCHEMA
    assert fields(data) <= documented("`compare --json")
    assert data["served"] == "x86-64-v2"
    assert data["advice_code"] == "worth-shipping"
    comparison = data["comparisons"][0]  # type: ignore[index]
    assert comparison["verdict"] == "faster"
    assert comparison["wall_speedup"]["low"] > 1.0
    assert [c["runs"] >= 3 for c in data["candidates"]] == [True, True]  # type: ignore[attr-defined]


def test_served_variant_slower_than_a_lower_one_is_said_plainly(
    tmp_path: Path, binaries: Path
) -> None:
    needs_level("x86-64-v3")
    root = loop_store(tmp_path, binaries, {"baseline": 4_000_000, "x86-64-v2": 1_000_000,
                                           "x86-64-v3": 4_000_000})
    result = compare(*QUICK, str(root), "bin/loop")
    assert result.returncode == 0, result.stderr.decode()
    out = result.stdout.decode()
    assert "x86-64-v3 is slower than x86-64-v2 on this CPU" in out
    assert "glibc would serve x86-64-v3" in out


def test_a_variant_that_behaves_differently_fails_the_comparison(
    tmp_path: Path, binaries: Path
) -> None:
    needs_level("x86-64-v2")
    root = loop_store(tmp_path, binaries, {"baseline": 100_000, "x86-64-v2": 100_000},
                      status={"x86-64-v2": 3})
    code, data = compare_json(*QUICK, str(root), "bin/loop")
    assert code == 1
    differing = {c["level"]: c["difference"] for c in data["candidates"]  # type: ignore[attr-defined]
                 if not c["matches_baseline"]}
    assert list(differing) == ["x86-64-v2"]
    assert "exit status 3, the baseline exit status 0" in differing["x86-64-v2"]
    assert fields(data) <= documented("`compare --json")
    assert data["advice_code"] == "output-differs"
    assert "Do not ship x86-64-v2" in str(data["advice"])


def test_the_demo_at_every_level_this_cpu_runs(tmp_path: Path, binaries: Path) -> None:
    root = tmp_path / "store"
    for level in ("baseline", "x86-64-v2", "x86-64-v3", "x86-64-v4"):
        where = "bin" if level == "baseline" else f"glibc-hwcaps/{level}/bin"
        built = binaries / f"demo-{level}"
        if not built.exists():
            subprocess.run(["gcc", "-O3", "-mneeded", f"-march={MARCH[level]}",
                            f'-DLEVEL="{level}"', "-o", str(built),
                            str(REPO / "bench/hwcaps-demo.c")], check=True)
        install(built, root / where / "hwcaps-demo")
    # The demo prints the level it was built for: its output differs by design.
    code, data = compare_json(*QUICK, str(root), "bin/hwcaps-demo", "--", "2000")
    assert code == 1 and data["advice_code"] == "output-differs"
    code, data = compare_json(*QUICK, "--status-only", str(root), "bin/hwcaps-demo", "--",
                              "2000")
    assert code == 0
    level = machine_level()
    measured = [c["level"] for c in data["candidates"]]  # type: ignore[attr-defined]
    assert measured == ["baseline", *X86_64.level_names[: X86_64.rank(level)]]
    assert data["served"] == level
    assert data["argv"] == ["hwcaps-demo", "2000"]
    assert data["advice_code"] in {"worth-shipping", "no-gain", "served-is-slower",
                                   "inconclusive", "nothing-to-compare"}


def zlib_example(name: str, binaries: Path, level: str, libs: tuple[str, ...] = ()) -> Path:
    source = ZLIB_EXAMPLES / f"{name}.c"
    if not source.exists():
        pytest.skip(f"{source} missing (apt-get install zlib1g-dev)")
    built = binaries / f"{name}-{level}"
    if not built.exists():
        subprocess.run(["gcc", "-O2", f"-march={MARCH[level]}", "-o", str(built), str(source),
                        *libs], check=True, capture_output=True)
    return built


def real_store(root: Path, binaries: Path, name: str, libs: tuple[str, ...] = ()) -> Path:
    level = machine_level()
    for each in ("baseline", *X86_64.level_names[: X86_64.rank(level)]):
        where = "bin" if each == "baseline" else f"glibc-hwcaps/{each}/bin"
        install(zlib_example(name, binaries, each, libs), root / where / name)
    return root


def test_a_real_program_built_at_every_level(tmp_path: Path, binaries: Path) -> None:
    """zlib's ``enough`` (counts prefix codes; pure integer work) from its Debian source."""
    root = real_store(tmp_path / "store", binaries, "enough")
    code, data = compare_json(*QUICK, str(root), "bin/enough", "--", "286", "9", "11")
    assert code == 0, data
    assert all(c["matches_baseline"] for c in data["candidates"])  # type: ignore[attr-defined]


def test_standard_input_is_read_once_and_fed_to_every_run(tmp_path: Path,
                                                          binaries: Path) -> None:
    """zlib's ``zpipe`` compresses its standard input: every run must see all of it."""
    root = real_store(tmp_path / "store", binaries, "zpipe", ("-lz",))
    payload = (REPO / "README.md").read_bytes() * 4
    code, data = compare_json(*QUICK, str(root), "bin/zpipe", stdin=payload)
    assert code == 0, data
    assert data["stdin"] == f"standard input ({len(payload)} bytes, read once)"
    # The same through --stdin FILE; and a file that is not there is exit 3.
    (tmp_path / "input").write_bytes(payload)
    code, data = compare_json(*QUICK, "--stdin", str(tmp_path / "input"), str(root),
                              "bin/zpipe")
    assert code == 0 and data["stdin"] == str(tmp_path / "input")
    # A pipe named by --stdin is read once too, not rewound (which it cannot be).
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=fifo.write_bytes, args=(payload,))
    writer.start()
    code, data = compare_json(*QUICK, "--stdin", str(fifo), str(root), "bin/zpipe")
    writer.join(timeout=60)
    assert code == 0 and data["stdin"] == f"{fifo} ({len(payload)} bytes, read once)"
    missing = compare("--stdin", str(tmp_path / "nothing"), str(root), "bin/zpipe")
    assert missing.returncode == 3 and b"--stdin" in missing.stderr


def test_on_a_terminal_stdin_is_dev_null_and_progress_shows(tmp_path: Path,
                                                            binaries: Path) -> None:
    needs_level("x86-64-v2")
    root = loop_store(tmp_path, binaries, {"baseline": 200_000, "x86-64-v2": 200_000})
    controller, terminal = pty.openpty()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "hwcaps_fs", "compare", *QUICK, "--json", str(root),
             "bin/loop"], stdin=terminal, stdout=subprocess.PIPE, stderr=terminal,
            env=ENVIRONMENT)
        os.close(terminal)
        shown = b""
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    shown += os.read(controller, 4096)
                except OSError:
                    break
        out, _ = process.communicate(timeout=60)
    finally:
        os.close(controller)
    assert json.loads(out)["stdin"] == "/dev/null"
    assert b"\rround " in shown


def test_no_progress_when_not_on_a_terminal(tmp_path: Path, binaries: Path) -> None:
    root = loop_store(tmp_path, binaries, {"baseline": 100_000})
    result = compare(*QUICK, str(root), "bin/loop")
    assert result.returncode == 0
    assert result.stderr == b""
    assert b"nothing to compare" in result.stdout


def test_no_such_name_is_one_line(tmp_path: Path, binaries: Path) -> None:
    root = loop_store(tmp_path, binaries, {"baseline": 100})
    result = compare(str(root), "loop")
    assert result.returncode == 3
    assert result.stderr.decode().strip() == (
        f"hwcaps-fs: loop: no such name in {root} (did you mean bin/loop?)")
    assert shutil.which("gcc")
