"""hwcaps-fs soak: parallel execs through a mount while its store is churned under it.

    make soak   (= .venv/bin/python -m bench.soak --seconds $(SOAK_SECONDS) --out ...)

What package managers do to a live store, for as long as asked, in rounds of four phases:

* *steady*: one operation at a time at ``--rate`` per second: variants replaced by a rename
  over the old file (a new *generation* of the program), names added and removed one file at a
  time, and the variant a name is served at removed and put back (its served level goes down,
  then up);
* *dpkg burst*: a package upgrade as dpkg writes it: every new file of ``--burst`` names
  unpacked as ``NAME.dpkg-new`` next to the old one (which gets a ``NAME.dpkg-tmp`` hard link
  as its backup), then all of them renamed over, then the backups removed;
* *storm*: rename-over upgrades as fast as ``--storm-rate`` per second for ``--storm-seconds``,
  each written as rpm does (``NAME;XXXXXXXX``, then renamed);
* *package removal*: every variant of one level of ``--burst`` names removed at once (a
  variant package uninstalled: those names drop to the next level down), then installed again.

Meanwhile several workers exec random names through the mount and check every run against a
model of the store kept by the churn thread:

* every program prints ``<name> <level> <generation>``; a generation is a byte patch of one
  of four gcc builds (baseline, x86-64-v2/v3/v4, each -mneeded), so churn costs no compiles;
* each name's *expected* output over time (the level the CPU gets: the highest active level
  with a variant built for no more than the CPU supports, else the baseline) is recorded as
  spans of monotonic time, and an exec is judged against the spans that overlap it;
* the daemon follows the store through inotify, so for a moment after a change it still
  serves the previous state: an output superseded less than ``--settle`` seconds before the
  exec started is *late* (allowed, and measured); anything older is *stale*; an output the
  name was never expected to give (a v4 build, the v4 build misplaced in the v3 directory of
  ``soak-misplaced``, a level below one that was there all along) is *wrong-level*;
* a failed exec counts as a failure only if the name existed throughout (from ``--settle``
  seconds before the exec to its end); names being added or removed may fail to run.

The daemon's RSS and open descriptors are sampled all along; "flat" means the least-squares
slope over the second half of the run stays under ``--rss-limit`` MB per minute (judged for
runs of at least two minutes; shorter runs only report it). The script exits 1 if any exec
failed, was wrong-level or stale, or RSS grew; 2 if the soak could not be set up.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import platform
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType

from bench.run import HWCAPS_FS, Stats, quote_in_readme, rss_mb, wait_mounted
from hwcaps_fs.core.levels import X86_64, Architecture
from hwcaps_fs.detect.cpu import DetectOptions, detect
from tests import builders
from tests.builders import gcc
from tests.mounting import stop

HERE = Path(__file__).resolve().parent

#: Directory level of each build, lowest first, and its gcc -march.
MARCH = {level: builders.MARCH[level] for level in ("baseline", *X86_64.level_names)}

#: The program: TAG's bytes are overwritten in each copy with "<name> <generation>", so that a
#: new generation is a byte patch of the build rather than a compile. ``volatile`` keeps gcc
#: from folding the placeholder into the code.
PROGRAM_C = r"""
#include <stdio.h>
#include <string.h>
static const volatile char tag[%(size)d] = "%(marker)s";
int main(void) {
    char copy[%(size)d];
    for (int i = 0; i < %(size)d; i++) copy[i] = tag[i];
    copy[%(size)d - 1] = 0;
    char *generation = strchr(copy, ' ');
    if (!generation) return 2;
    *generation++ = 0;
    printf("%%s %%s %%s\n", copy, LEVEL, generation);
    return 0;
}
"""
TAG_MARKER = b"@@HWCAPS_FS_SOAK_TAG@@"
TAG_SIZE = 96

#: The name whose v3 directory holds a v4 build: never to be served on a v3 (or lower) CPU.
MISPLACED = "soak-misplaced"

#: Upper bound for one exec or for the daemon to come up or go away.
DEADLINE = 30.0

README_START = "<!-- soak results: start -->"
README_END = "<!-- soak results: end -->"


# -- the programs --------------------------------------------------------------------------


@dataclass(frozen=True)
class Build:
    """One gcc build of the program, with the offset of its tag."""

    level: str
    data: bytes
    offset: int

    def stamped(self, name: str, generation: int) -> bytes:
        tag = f"{name} {generation}".encode()
        assert len(tag) < TAG_SIZE, tag
        padded = tag.ljust(TAG_SIZE, b"\0")
        return self.data[:self.offset] + padded + self.data[self.offset + TAG_SIZE:]


def build_programs(work: Path) -> dict[str, Build]:
    """The program built for every level, -mneeded (its ISA note says what it needs)."""
    source = work / "soak.c"
    source.write_text(PROGRAM_C % {"size": TAG_SIZE, "marker": TAG_MARKER.decode()})
    builds = {}
    for level, march in MARCH.items():
        out = gcc(work / f"soak-{level}", source, f"-march={march}", "-mneeded",
                  f'-DLEVEL="{level}"')
        data = out.read_bytes()
        if data.count(TAG_MARKER) != 1:
            raise RuntimeError(f"{out}: the tag placeholder is not in the build exactly once")
        builds[level] = Build(level, data, data.index(TAG_MARKER))
    return builds


# -- the store and its history ---------------------------------------------------------------


#: What an exec of a name is expected to print: (level, generation).
Output = tuple[str, int]


@dataclass
class Span:
    """``state`` was what the name should run from ``start`` until ``end`` (monotonic
    seconds; ``start`` is taken before the change, ``end`` after the next one, so each span
    covers its change's whole system call). ``None``: the name did not exist."""

    start: float
    state: Output | None
    end: float = math.inf
    first_seen: float | None = None


class Store:
    """The churned store on disk and its model: which build and generation each directory
    level holds for each name, and each name's history of expected outputs.

    Only the churn thread changes the store; workers read the model under ``lock``.
    """

    def __init__(self, root: Path, builds: dict[str, Build], arch: Architecture,
                 cpu_level: str, active_levels: tuple[str, ...]) -> None:
        self.root = root
        self.builds = builds
        self.arch = arch
        self.cpu_rank = arch.rank(cpu_level)
        self.active_levels = active_levels
        self.files: dict[str, dict[str, tuple[str, int]]] = {}
        self.history: dict[str, list[Span]] = {}
        self.lock = threading.Lock()
        self.generations = 0
        self.file_changes = 0

    def path(self, name: str, level: str) -> Path:
        if level == "baseline":
            return self.root / "bin" / name
        return self.root / "glibc-hwcaps" / level / "bin" / name

    def names(self) -> list[str]:
        with self.lock:
            return list(self.files)

    def expected(self, name: str) -> Output | None:
        """What ``name`` should run now: glibc's choice, with the daemon's ISA-note check."""
        files = self.files.get(name, {})
        for level in (*self.active_levels, "baseline"):
            if level in files:
                built, generation = files[level]
                if self.arch.rank(built) <= self.cpu_rank:
                    return built, generation
        return None

    def write(self, name: str, level: str, build: str | None = None,
              suffix: str = ".soak-new") -> None:
        """Install a new generation of ``name`` at directory ``level`` as package managers
        do: a temporary file in the same directory, renamed over the old one."""
        self.rename_in(*self.unpack(name, level, build, suffix))

    def unpack(self, name: str, level: str, build: str | None = None,
               suffix: str = ".soak-new") -> tuple[Path, str, str, tuple[str, int]]:
        """Write a new generation of ``name`` at directory ``level`` under a temporary name
        (``name + suffix``, next to it); :meth:`rename_in` puts it in place."""
        built = build or level
        self.generations += 1
        target = self.path(name, level)
        target.parent.mkdir(parents=True, exist_ok=True)
        temporary = target.with_name(f"{name}{suffix}")
        temporary.write_bytes(self.builds[built].stamped(name, self.generations))
        temporary.chmod(0o755)
        return temporary, name, level, (built, self.generations)

    def rename_in(self, temporary: Path, name: str, level: str,
                  entry: tuple[str, int]) -> None:
        with self.lock:
            before = time.monotonic()
            temporary.rename(self.path(name, level))
            self._changed(name, level, entry, before)

    def remove(self, name: str, level: str) -> None:
        with self.lock:
            before = time.monotonic()
            self.path(name, level).unlink()
            self._changed(name, level, None, before)

    def _changed(self, name: str, level: str, entry: tuple[str, int] | None,
                 before: float) -> None:
        """Record that directory ``level`` now holds ``entry`` (None: nothing) for ``name``,
        a change that began at ``before`` and ends now. Called with ``lock`` held since
        before the change, so that no exec that already saw it is judged before it is
        recorded."""
        after = time.monotonic()
        self.file_changes += 1
        files = self.files.setdefault(name, {})
        if entry is None:
            del files[level]
        else:
            files[level] = entry
        if not files:
            del self.files[name]
        state = self.expected(name)
        spans = self.history.setdefault(name, [Span(-math.inf, None)])
        if spans[-1].state != state:
            spans[-1].end = after
            spans.append(Span(before, state))


# -- judging an exec ---------------------------------------------------------------------------


VERDICTS = ("ok", "late", "in flux", "failed", "wrong-level", "stale")


@dataclass
class Tally:
    """What the workers saw: counts by verdict, how late the late ones were, examples."""

    counts: Counter[str] = field(default_factory=Counter)
    lateness: list[float] = field(default_factory=list)
    examples: dict[str, list[str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, verdict: str, detail: str, lateness: float | None = None) -> None:
        with self.lock:
            self.counts[verdict] += 1
            if lateness is not None:
                self.lateness.append(lateness)
            if verdict not in ("ok", "late"):
                shown = self.examples.setdefault(verdict, [])
                if len(shown) < 5:
                    shown.append(detail)


def judge(store: Store, name: str, start: float, end: float, settle: float,
          returncode: int | None, stdout: str) -> tuple[str, float | None]:
    """The verdict on one exec of ``name`` that ran from ``start`` to ``end``, and for a
    late one how long before ``start`` its output had been superseded."""
    with store.lock:
        spans = store.history[name]
        during = [s for s in spans if s.start <= end and s.end >= start]
        window = [s for s in spans if s.start <= end and s.end >= start - settle]
        words = stdout.split()
        if returncode != 0 or len(words) != 3 or words[0] != name or not words[2].isdigit():
            existed = all(s.state is not None for s in window)
            return ("failed" if existed else "in flux"), None
        output = (words[1], int(words[2]))
        for span in during:
            if span.state == output:
                if span.first_seen is None:
                    span.first_seen = end
                return "ok", None
        for span in window:
            if span.state == output:
                return "late", start - span.end
        if any(s.state == output for s in spans):
            return "stale", None
        return "wrong-level", None


def exec_worker(store: Store, mountpoint: Path, settle: float, tally: Tally,
                stop: threading.Event, seed: int) -> None:
    """Exec random names through the mount until ``stop``; every run judged and tallied."""
    chooser = random.Random(seed)
    while not stop.is_set():
        name = chooser.choice(store.names())
        start = time.monotonic()
        try:
            result = subprocess.run([str(mountpoint / "bin" / name)], capture_output=True,
                                    text=True, timeout=DEADLINE, check=False)
            returncode, stdout, stderr = result.returncode, result.stdout, result.stderr
        except (OSError, subprocess.TimeoutExpired) as exc:
            returncode, stdout, stderr = None, "", str(exc)
        end = time.monotonic()
        verdict, lateness = judge(store, name, start, end, settle, returncode, stdout)
        tally.add(verdict, f"{name}: exit {returncode}, printed {stdout.strip()!r}, "
                  f"{stderr.strip()[:200]!r}", lateness)


# -- the churn -------------------------------------------------------------------------------


class Churn:
    """Changes the store at a steady rate, one operation at a time (see the module doc)."""

    def __init__(self, store: Store, names: int, seed: int) -> None:
        self.store = store
        self.target_names = names
        self.random = random.Random(seed)
        self.operations: Counter[str] = Counter()
        self.dropped: list[tuple[str, str]] = []
        self.added = 0

    def churnable(self) -> list[str]:
        return [n for n in self.store.names() if n != MISPLACED]

    def add(self, name: str) -> None:
        """A new name: the baseline first, so that it is served from its first file on."""
        for level in MARCH:
            self.store.write(name, level)

    def step(self) -> None:
        names = self.churnable()
        kind = self.random.choices(["upgrade", "drop", "restore", "add", "remove"],
                                   weights=[8, 2, 2, 2, 2])[0]
        if kind == "add" and len(names) > self.target_names * 1.2:
            kind = "remove"
        elif kind == "remove" and len(names) < self.target_names * 0.8:
            kind = "add"
        restorable = [(n, level) for n, level in self.dropped if n in self.store.files]
        self.dropped = restorable
        if kind == "restore" and not restorable:
            kind = "drop"
        if kind == "upgrade":
            name = self.random.choice(names)
            self.store.write(name, self.random.choice(list(self.store.files[name])))
        elif kind == "drop":
            name = self.random.choice(names)
            state = self.store.expected(name)
            if state is None or state[0] == "baseline":
                kind = "drop (nothing to drop)"
            else:
                self.store.remove(name, state[0])
                self.dropped.append((name, state[0]))
        elif kind == "restore":
            name, level = self.dropped.pop(self.random.randrange(len(restorable)))
            self.store.write(name, level)
        elif kind == "add":
            self.added += 1
            self.add(f"soak-new-{self.added:05d}")
        else:
            name = self.random.choice(names)
            for level in reversed(list(MARCH)):
                if level in self.store.files[name]:
                    self.store.remove(name, level)
        self.operations[kind] += 1

    def run(self, settings: Settings, stop: threading.Event) -> None:
        """Rounds of the four phases (see the module doc) until ``stop``."""
        while not stop.is_set():
            self.steady(settings.rate, settings.steady_seconds, stop)
            if not stop.is_set():
                self.dpkg_burst(settings.burst)
            self.steady(settings.rate, settings.steady_seconds, stop)
            self.storm(settings.storm_rate, settings.storm_seconds, stop)
            if not stop.is_set():
                self.package_removal(settings.burst, settings.steady_seconds, stop)

    def steady(self, rate: float, seconds: float, stop: threading.Event) -> None:
        self.paced(self.step, rate, seconds, stop)

    @staticmethod
    def paced(operation: Callable[[], None], rate: float, seconds: float,
              stop: threading.Event) -> None:
        """``operation`` ``rate`` times per second for ``seconds`` (or until ``stop``)."""
        began = due = time.monotonic()
        while not stop.is_set() and due - began < seconds:
            operation()
            due += 1 / rate
            stop.wait(max(0.0, due - time.monotonic()))

    def dpkg_burst(self, count: int) -> None:
        """Upgrade ``count`` names the way dpkg unpacks a package: backups as hard links,
        every new file as ``.dpkg-new``, then all renamed over, then the backups removed."""
        names = self.random.sample(self.churnable(), min(count, len(self.churnable())))
        unpacked = []
        for name in names:
            for level in list(self.store.files.get(name, {})):
                target = self.store.path(name, level)
                backup = target.with_name(f"{name}.dpkg-tmp")
                backup.unlink(missing_ok=True)
                os.link(target, backup)
                unpacked.append((backup, self.store.unpack(name, level, suffix=".dpkg-new")))
        for _, (temporary, name, level, entry) in unpacked:
            self.store.rename_in(temporary, name, level, entry)
        for backup, _ in unpacked:
            backup.unlink()
        self.operations["dpkg burst (names)"] += len(names)

    def storm(self, rate: float, seconds: float, stop: threading.Event) -> None:
        """Rename-over upgrades at ``rate`` per second, each through an rpm-style
        temporary name (``NAME;XXXXXXXX``)."""
        def upgrade() -> None:
            name = self.random.choice(self.churnable())
            level = self.random.choice(list(self.store.files[name]))
            self.store.write(name, level, suffix=f";{self.random.getrandbits(32):08x}")
            self.operations["storm upgrade"] += 1
        self.paced(upgrade, rate, seconds, stop)

    def package_removal(self, count: int, seconds: float, stop: threading.Event) -> None:
        """Uninstall the variants of one level for ``count`` names at once (a variant
        package), wait ``seconds``, install them again."""
        level = self.random.choice([level for level in MARCH if level != "baseline"])
        names = [name for name in self.churnable() if level in self.store.files[name]]
        removed = self.random.sample(names, min(count, len(names)))
        for name in removed:
            self.store.remove(name, level)
        self.operations["package removal (names)"] += len(removed)
        stop.wait(seconds)
        for name in removed:
            if name in self.store.files:
                self.store.write(name, level)


# -- the daemon --------------------------------------------------------------------------------


@contextlib.contextmanager
def serving(root: Path, mountpoint: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``hwcaps-fs mount --foreground`` (its warnings kept in ``log``) for the ``with`` body;
    stopped with SIGTERM (SIGKILL and a lazy unmount if it will not go) whatever happens."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as stderr:
        daemon = subprocess.Popen([*HWCAPS_FS, "mount", "--foreground", "--root", str(root),
                                   str(mountpoint)], stdin=subprocess.DEVNULL, stdout=stderr,
                                  stderr=stderr, start_new_session=True)
    try:
        try:
            wait_mounted(mountpoint, daemon, DEADLINE, "hwcaps-fs")
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}: {log.read_text(errors='replace')}") from None
        yield daemon
    finally:
        stop(daemon, DEADLINE)
        if os.path.ismount(mountpoint):
            subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True, check=False)


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Sample:
    seconds: float
    rss_mb: float
    fds: int


def sample_daemon(pid: int, every: float, samples: list[Sample],
                  stop: threading.Event) -> None:
    began = time.monotonic()
    while True:
        samples.append(Sample(time.monotonic() - began, rss_mb(pid), open_fds(pid)))
        if stop.wait(every):
            return


# -- the run -----------------------------------------------------------------------------------


@dataclass
class Settings:
    seconds: float
    workers: int
    names: int
    rate: float
    settle: float
    rss_every: float
    rss_limit: float
    seed: int
    burst: int = 20
    steady_seconds: float = 2.0
    storm_rate: float = 100.0
    storm_seconds: float = 2.0


@dataclass
class Outcome:
    """Everything the report needs."""

    settings: Settings
    level: str
    seconds: float = 0.0
    tally: Tally = field(default_factory=Tally)
    operations: Counter[str] = field(default_factory=Counter)
    file_changes: int = 0
    names_at_end: int = 0
    first_seen: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    daemon_warnings: list[str] = field(default_factory=list)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def slope(self) -> float | None:
        """MB per minute over the second half (least squares), None with too few samples."""
        half = [s for s in self.samples if s.seconds >= self.seconds / 2]
        if len(half) < 3:
            return None
        return statistics.linear_regression([s.seconds for s in half],
                                            [s.rss_mb for s in half]).slope * 60

    def problems(self) -> list[str]:
        found = [f"{self.tally.counts[verdict]} {verdict} exec(s)"
                 for verdict in ("failed", "wrong-level", "stale") if self.tally.counts[verdict]]
        if not self.tally.counts["ok"]:
            found.append("no exec succeeded")
        slope = self.slope()
        if self.seconds >= 120 and slope is not None and slope > self.settings.rss_limit:
            found.append(f"daemon RSS grew {slope:.2f} MB/min over the second half "
                         f"(bound {self.settings.rss_limit} MB/min)")
        return found


def soak(settings: Settings, work: Path) -> Outcome:
    """Build, mount, exec and churn for ``settings.seconds``; always unmounts."""
    detection = detect(DetectOptions(environ=dict(os.environ)))
    builds = build_programs(work)
    store = Store(work / "store", builds, detection.architecture, detection.level,
                  detection.active_levels())
    churn = Churn(store, settings.names, settings.seed)
    for i in range(settings.names):
        churn.add(f"soak-{i:04d}")
    for level in ("baseline", "x86-64-v2"):
        store.write(MISPLACED, level)
    store.write(MISPLACED, "x86-64-v3", build="x86-64-v4")
    outcome = Outcome(settings, detection.level)
    log = work / "daemon.log"
    stop = threading.Event()
    with serving(store.root, work / "mnt", log) as daemon:
        outcome.load_before = os.getloadavg()
        threads = [threading.Thread(target=exec_worker, name=f"exec-{i}", daemon=True,
                                    args=(store, work / "mnt", settings.settle, outcome.tally,
                                          stop, settings.seed + i))
                   for i in range(settings.workers)]
        threads.append(threading.Thread(target=churn.run, name="churn", daemon=True,
                                        args=(settings, stop)))
        threads.append(threading.Thread(target=sample_daemon, name="rss", daemon=True,
                                        args=(daemon.pid, settings.rss_every,
                                              outcome.samples, stop)))
        began = time.monotonic()
        try:
            for thread in threads:
                thread.start()
            while time.monotonic() - began < settings.seconds:
                if not all(t.is_alive() for t in threads):
                    raise RuntimeError("a soak thread died (see the traceback above)")
                if daemon.poll() is not None:
                    raise RuntimeError(f"the daemon exited with {daemon.returncode}")
                stop.wait(min(1.0, settings.seconds - (time.monotonic() - began)))
        finally:
            stop.set()
            for thread in threads:
                thread.join(DEADLINE * 2)
        outcome.seconds = time.monotonic() - began
        outcome.load_after = os.getloadavg()
    outcome.operations = churn.operations
    outcome.file_changes = store.file_changes
    outcome.names_at_end = len(store.files)
    outcome.first_seen = [span.first_seen - span.start for spans in store.history.values()
                          for span in spans[1:] if span.first_seen is not None
                          and span.start > began]
    outcome.daemon_warnings = log.read_text(errors="replace").splitlines()
    return outcome


# -- the report --------------------------------------------------------------------------------


def report(outcome: Outcome) -> list[str]:
    s, tally = outcome.settings, outcome.tally
    counts = tally.counts
    execs = sum(counts.values())
    load0, load1 = outcome.load_before, outcome.load_after
    lines = [
        "# hwcaps-fs soak results",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
        f"{platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, level "
        f"served {outcome.level}. Command: `make soak` (`python -m bench.soak --seconds "
        f"{s.seconds:g}`). The machine is shared: load average (1, 5, 15 min) "
        f"{load0[0]:.2f}, {load0[1]:.2f}, {load0[2]:.2f} when the execs started and "
        f"{load1[0]:.2f}, {load1[1]:.2f}, {load1[2]:.2f} when they stopped.",
        "",
        f"{s.workers} workers exec random names through the mount while one thread churns the "
        f"store (about {s.names} names, each with a baseline and x86-64-v2/v3/v4 variants, "
        f"plus `{MISPLACED}` with a v4 build in its v3 directory) in rounds: "
        f"{s.steady_seconds:g} s at {s.rate:g} operations per second (rename-over upgrades, "
        "the served variant removed and put back, names added and removed one file at a "
        f"time), a dpkg burst ({s.burst} names unpacked as `.dpkg-new`, then renamed over), "
        f"again {s.steady_seconds:g} s steady, a storm of rename-over upgrades at "
        f"{s.storm_rate:g} per second for {s.storm_seconds:g} s (rpm-style temporary names), "
        f"and the variants of one level removed for {s.burst} names (a package uninstalled) "
        f"and installed again {s.steady_seconds:g} s later. Every output is checked against "
        "the store's history (see bench/soak.py).",
        "",
        "## Execs",
        "",
        "| measure | value |",
        "|---|---|",
        f"| duration | {outcome.seconds:.0f} s |",
        f"| execs | {execs:,} ({execs / max(outcome.seconds, 1e-9):.0f} per second) |",
        f"| failed execs (name present throughout) | {counts['failed']} |",
        f"| wrong-level execs | {counts['wrong-level']} |",
        f"| stale-generation execs (superseded more than {s.settle:g} s before) | "
        f"{counts['stale']} |",
        f"| late execs (ran the state replaced less than {s.settle:g} s before; allowed) | "
        f"{counts['late']} |",
        f"| execs of a name being added or removed that did not run (allowed) | "
        f"{counts['in flux']} |",
        "",
        "## Churn",
        "",
        "| operation | count |",
        "|---|---|",
        *(f"| {kind} | {n:,} |" for kind, n in sorted(outcome.operations.items())),
        f"| files renamed in or removed | {outcome.file_changes:,} "
        f"({outcome.file_changes / max(outcome.seconds, 1e-9):.1f} per second) |",
        f"| names at the end | {outcome.names_at_end} |",
        "",
        "## Update latency",
        "",
    ]
    if outcome.first_seen:
        seen = Stats.of([x * 1000 for x in outcome.first_seen])
        interval = outcome.names_at_end * outcome.seconds / max(execs, 1)
        lines.append(f"From a change to the end of the first exec that printed the new state: "
                     f"median {seen.median:.0f} ms, p90 {seen.p90:.0f} ms over {seen.n:,} "
                     f"changes (an upper bound: each name is exec'd about every "
                     f"{interval * 1000:.0f} ms).")
    if tally.lateness:
        late = Stats.of([x * 1000 for x in tally.lateness])
        lines.append(f"Late execs started up to {max(tally.lateness) * 1000:.0f} ms (median "
                     f"{late.median:.0f}, p90 {late.p90:.0f}) after their output was "
                     "superseded: how long the daemon takes to follow a change.")
    lines += ["", "## Daemon memory", ""]
    if outcome.samples:
        first, last = outcome.samples[0], outcome.samples[-1]
        half = [x for x in outcome.samples if x.seconds >= outcome.seconds / 2] or [last]
        slope = outcome.slope()
        judged = ("judged" if outcome.seconds >= 120
                  else "not judged: the run is shorter than 2 minutes")
        lines += [
            "| measure | value |",
            "|---|---|",
            f"| RSS at start | {first.rss_mb:.1f} MB |",
            f"| RSS at half time | {half[0].rss_mb:.1f} MB |",
            f"| RSS max | {max(x.rss_mb for x in outcome.samples):.1f} MB |",
            f"| RSS at end | {last.rss_mb:.1f} MB |",
            "| RSS slope over the second half (least squares) | "
            + (f"{slope:+.3f} MB/min" if slope is not None else "too few samples")
            + f" (bound {s.rss_limit:g} MB/min, {judged}) |",
            f"| open descriptors at start, max, end | {first.fds}, "
            f"{max(x.fds for x in outcome.samples)}, {last.fds} |",
            f"| samples | {len(outcome.samples)}, every {s.rss_every:g} s |",
            "",
        ]
    warnings = [w for w in outcome.daemon_warnings if "WARNING" in w or "ERROR" in w]
    lines.append(f"The daemon logged {len(warnings)} warning(s) or error(s)"
                 + (":" if warnings else "."))
    lines += [f"    {w}" for w in warnings[:5]]
    lines += ["", "## Verdict", ""]
    problems = outcome.problems()
    lines.append("FAIL: " + "; ".join(problems) if problems else
                 "PASS: no failed, wrong-level or stale exec; daemon RSS flat.")
    for verdict, shown in sorted(tally.examples.items()):
        lines += ["", f"Examples of {verdict} execs:", ""]
        lines += [f"    {example}" for example in shown]
    return lines


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--names", type=int, default=50)
    parser.add_argument("--rate", type=float, default=10, help="churn operations per second")
    parser.add_argument("--settle", type=float, default=2.0,
                        help="seconds the daemon may take to follow a change")
    parser.add_argument("--rss-every", type=float, default=2.0)
    parser.add_argument("--rss-limit", type=float, default=1.0,
                        help="MB per minute the daemon's RSS may grow in the second half")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--burst", type=int, default=20,
                        help="names in one dpkg burst or one variant package removal")
    parser.add_argument("--steady-seconds", type=float, default=2.0,
                        help="seconds of each steady phase (and of a package's absence)")
    parser.add_argument("--storm-rate", type=float, default=100.0,
                        help="rename-over upgrades per second in a storm")
    parser.add_argument("--storm-seconds", type=float, default=2.0)
    parser.add_argument("--tmp", type=Path, default=Path("/var/tmp"),
                        help="where the (removed afterwards) working directory goes")
    parser.add_argument("--out", type=Path, default=HERE / "soak-results.md")
    parser.add_argument("--doc", type=Path, help="also replace the results quoted in this file "
                        f"(docs/testing.md) between {README_START!r} and {README_END!r}")
    args = parser.parse_args()
    settings = Settings(args.seconds, args.workers, args.names, args.rate, args.settle,
                        args.rss_every, args.rss_limit, args.seed, args.burst,
                        args.steady_seconds, args.storm_rate, args.storm_seconds)
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="hwcaps-fs-soak-", dir=args.tmp))
    try:
        outcome = soak(settings, work)
    except KeyboardInterrupt as exc:
        print(f"soak: interrupted ({exc}); unmounted and cleaned up", file=sys.stderr)
        return 130
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        detail = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else ""
        print(f"soak: cannot run: {exc} {detail}", file=sys.stderr)
        return 2
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = report(outcome)
    print("\n".join(lines))
    args.out.write_text("\n".join(lines) + "\n")
    if args.doc:
        quote_in_readme(args.doc, lines[1:], README_START, README_END)
    return 1 if outcome.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
