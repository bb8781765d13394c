"""README.md quotes only what ``make bench`` wrote: its summary is the one bench.run makes
from bench/results.md, and every headline of that summary is found in the results."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from bench import run as bench
from hwcaps_fs.core.mount_options import DOCUMENTED
from hwcaps_fs.errors import EXIT_STATUSES

TOP = Path(__file__).resolve().parents[1]
START, END = "<!-- bench results: start -->", "<!-- bench results: end -->"


def quoted(readme: Path) -> str:
    text = readme.read_text()
    return text[text.index(START):text.index(END)]


def test_readme_quotes_the_summary_of_bench_results(tmp_path: Path) -> None:
    copy = tmp_path / "README.md"
    shutil.copy(TOP / "README.md", copy)
    subprocess.run([sys.executable, "-m", "bench.run", "--summarize", "--out",
                    str(TOP / "bench" / "results.md"), "--readme", str(copy)], check=True,
                   cwd=TOP)
    summary = quoted(copy)
    assert summary == quoted(TOP / "README.md"), "README.md's figures differ from bench/results.md"
    assert "[bench/results.md](bench/results.md)" in summary


def test_every_headline_is_in_the_results() -> None:
    lines = (TOP / "bench" / "results.md").read_text().splitlines()
    rows = [line for line in bench.summary(lines) if line.startswith("| ")]
    measures = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]
    assert measures == [headline.measure for headline in bench.HEADLINES]


def test_readme_lists_every_mount_option() -> None:
    text = (TOP / "README.md").read_text()
    table = text[text.index("| `-o` option |"):].split("\n\n")[0]
    for name, _ in DOCUMENTED:
        assert f"`{name.partition('=')[0]}" in table, name


def test_readme_lists_every_exit_status() -> None:
    text = (TOP / "README.md").read_text()
    table = text[text.index("| status | meaning |"):].split("\n\n")[0]
    codes = {code for row in table.splitlines()[2:]
             for code in row.split(" | ")[0].removeprefix("| ").split(", ")}
    assert codes == {str(code) for code, _ in EXIT_STATUSES}
