"""``hwcaps-fs compare``: is a program's variant build worth shipping, on this CPU?

glibc's rule serves the highest level present, not the fastest build, and most programs gain
nothing from a rebuild, so a packager needs evidence. This module measures it:

1. :func:`plan` picks what to run: for the baseline and every level this CPU searches, the
   candidate resolution would serve on a CPU capped at that level (so a v2 build is measured
   as what a v2 machine gets, and a misplaced or unusable build is left out, with the reason);
2. :func:`measure` runs them all with the same arguments and input, in a shuffled order in
   every round, after one warm-up round, until every comparison is conclusive or the time
   budget ends;
3. :func:`compare_results` turns the timings into speed-ups with confidence intervals
   (:mod:`hwcaps_fs.stats`), checks that every build's output and exit status equal the
   baseline's, and says what a packager should do;
4. :func:`render` prints that for people, or as JSON (fields documented in docs/json.md).

Only :func:`measure` and the command's shell at the end do I/O (runs go through
:class:`~hwcaps_fs.system.measure.Runner`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import posixpath
import random
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from hwcaps_fs.commands.compare_settings import Settings
from hwcaps_fs.commands.report import SCHEMA, Report
from hwcaps_fs.core import stats
from hwcaps_fs.core.model import Candidate, Store
from hwcaps_fs.core.resolve import Target, resolve
from hwcaps_fs.core.view import BASELINE
from hwcaps_fs.errors import PathError, show
from hwcaps_fs.store.files import untrusted_path
from hwcaps_fs.system.measure import Outcome, Run, Runner, scratch_file


@dataclass(frozen=True)
class Contender:
    """One build to measure: the level whose machines get it, and the candidate itself."""

    level: str
    candidate: Candidate


@dataclass(frozen=True)
class Plan:
    """What to run for ``relpath``: ``contenders`` lowest level first (the first is the
    reference every other is compared with), ``served`` the level of the one served on this
    CPU, ``left_out`` the candidates not measured and why."""

    relpath: str
    contenders: tuple[Contender, ...]
    served: str
    left_out: tuple[tuple[str, str, str], ...]  # (level, path, reason)


def plan(relpath: str, store: Store, target: Target) -> Plan:
    """The builds of ``relpath`` this CPU can run, as resolution would serve them at each
    level up to the target's. Raises nothing: an empty plan means nothing is runnable."""
    candidates = store.candidates(relpath)
    contenders: list[Contender] = []
    seen: set[str] = set()
    for level in (BASELINE, *reversed(target.levels)):
        served = resolve(relpath, candidates, target.capped(level)).served
        if served is not None and served.path not in seen:
            seen.add(served.path)
            contenders.append(Contender(served.level or BASELINE, served))
    full = resolve(relpath, candidates, target)
    left_out = tuple((skip.candidate.level or BASELINE, skip.candidate.path, skip.reason)
                     for skip in full.skipped if skip.candidate.path not in seen)
    served_level = full.served.level or BASELINE if full.served else BASELINE
    return Plan(relpath, tuple(contenders), served_level, left_out)


@dataclass
class Samples:
    """Every timed run of one contender, and the outcome of its warm-up run."""

    first: Outcome
    runs: list[Run] = field(default_factory=list)

    @property
    def walls(self) -> list[float]:
        return [run.wall for run in self.runs]

    @property
    def cpus(self) -> list[float]:
        # A run too short for the kernel's CPU accounting reads 0; keep it positive for logs.
        return [max(run.cpu, 1e-6) for run in self.runs]


@dataclass(frozen=True)
class Measurement:
    samples: Mapping[str, Samples]
    rounds: int
    elapsed: float
    conclusive: bool
    stopped_by: str


Progress = Callable[[int, float, Mapping[str, Samples]], None]


def measure(plan_: Plan, argv: Sequence[str], env: Mapping[str, str], runner: Runner,
            root: str, settings: Settings, progress: Progress | None = None) -> Measurement:
    """Run every contender of ``plan_`` (paths relative to ``root``): one warm-up round,
    then shuffled rounds until :func:`conclusive`, the budget or ``max_rounds``."""
    order = list(plan_.contenders)
    rng = random.Random(settings.seed)
    paths = {c.level: os.path.join(root, c.candidate.source) for c in order}
    samples = {c.level: Samples(runner.run(paths[c.level], argv, env).outcome) for c in order}
    if any(s.first.error is not None for s in samples.values()):
        return Measurement(samples, 0, 0.0, False, "a build could not be run")
    start = time.monotonic()
    rounds = 0
    next_check = settings.min_rounds
    while True:
        rng.shuffle(order)
        for contender in order:
            samples[contender.level].runs.append(runner.run(paths[contender.level], argv, env))
        rounds += 1
        elapsed = time.monotonic() - start
        if progress is not None:
            progress(rounds, elapsed, samples)
        if rounds >= next_check:
            # Checking costs n² per pair; check on a geometric schedule.
            next_check = max(rounds + 1, math.ceil(rounds * 1.2))
            if conclusive(plan_, samples, settings):
                return Measurement(samples, rounds, elapsed, True, "conclusive")
        if rounds >= settings.min_rounds and elapsed >= settings.budget:
            return Measurement(samples, rounds, elapsed, False, "time budget")
        if rounds >= settings.max_rounds:
            return Measurement(samples, rounds, elapsed, False, "round limit")


def _pairs(plan_: Plan) -> list[tuple[str, str]]:
    """(candidate, reference) level pairs to decide: every build against every lower one."""
    levels = [c.level for c in plan_.contenders]
    return [(high, low) for i, high in enumerate(levels) for low in levels[:i]]


def conclusive(plan_: Plan, samples: Mapping[str, Samples], settings: Settings) -> bool:
    """Whether every pair has a verdict other than UNCLEAR."""
    for high, low in _pairs(plan_):
        ratio = stats.speedup(samples[low].walls, samples[high].walls, settings.confidence)
        if stats.verdict(ratio, settings.tolerance) is stats.Verdict.UNCLEAR:
            return False
    return True


@dataclass(frozen=True)
class Comparison:
    """The speed-up of ``level`` over ``reference`` and what it means: ``verdict`` by wall
    time (what users wait for), ``cpu_verdict`` by CPU time (which other load on the machine
    disturbs less, for single-threaded programs)."""

    level: str
    reference: str
    wall: stats.Ratio
    cpu: stats.Ratio
    verdict: stats.Verdict
    cpu_verdict: stats.Verdict


@dataclass(frozen=True)
class Result:
    """Everything ``compare`` reports."""

    plan: Plan
    measurement: Measurement
    comparisons: tuple[Comparison, ...]
    differences: Mapping[str, str]  # level -> how it differs from the baseline
    notes: tuple[str, ...]
    advice: str
    advice_code: str


def _difference(first: Outcome, reference: Outcome, runs: Sequence[Run]) -> str | None:
    if first.error is not None:
        return first.error
    if first.status != reference.status:
        return f"{first.describe_status()}, the baseline {reference.describe_status()}"
    if first.stdout_digest != reference.stdout_digest:
        return f"its output differs from the baseline's (starts {first.stdout_excerpt[:60]!r})"
    varying = [r for r in runs if r.outcome.status != first.status]
    if varying:
        return f"{varying[0].outcome.describe_status()} in a later run"
    return None


def compare_results(plan_: Plan, measurement: Measurement, settings: Settings,
                    check_output: bool = True) -> Result:
    """Speed-ups, differences and the advice, from the measurements."""
    samples = measurement.samples
    levels = [c.level for c in plan_.contenders]
    reference = samples[levels[0]]
    notes: list[str] = []
    differences: dict[str, str] = {}
    for level in levels:
        first = samples[level].first
        if not check_output:
            first = dataclasses.replace(first, stdout_digest=reference.first.stdout_digest)
        diff = _difference(first, reference.first, samples[level].runs)
        if diff is not None and level != levels[0]:
            differences[level] = diff
        elif diff is not None:
            notes.append(f"the {level} build itself failed: {diff}")
    if check_output and len({r.outcome.stdout_digest for r in reference.runs}) > 1:
        notes.append(f"the {levels[0]} build's output changes from run to run: outputs were "
                     "compared on the warm-up run only (--status-only compares exit statuses)")
    if reference.first.status != 0 and not differences:
        notes.append(f"every build ends with {reference.first.describe_status()}")
    if levels[0] != BASELINE:
        notes.append(f"no usable baseline: speed-ups are over {levels[0]}")
    for level, path, reason in plan_.left_out:
        notes.append(f"not measured: {level} ({show(path)}): {reason}")
    comparisons = []
    if measurement.rounds:
        for high, low in _pairs(plan_):
            wall = stats.speedup(samples[low].walls, samples[high].walls, settings.confidence)
            cpu = stats.speedup(samples[low].cpus, samples[high].cpus, settings.confidence)
            comparisons.append(Comparison(high, low, wall, cpu,
                                          stats.verdict(wall, settings.tolerance),
                                          stats.verdict(cpu, settings.tolerance)))
    advice, code = _advice(plan_, measurement, tuple(comparisons), differences, settings)
    return Result(plan_, measurement, tuple(comparisons), differences, tuple(notes), advice,
                  code)


def _times(ratio: stats.Ratio) -> str:
    high = "∞" if math.isinf(ratio.high) else f"{ratio.high:.2f}"
    return f"{ratio.estimate:.2f}× ({ratio.low:.2f}–{high})"


def _advice(plan_: Plan, measurement: Measurement, comparisons: tuple[Comparison, ...],
            differences: Mapping[str, str], settings: Settings) -> tuple[str, str]:
    """One paragraph for the packager, and a stable code for tools."""
    served = plan_.served
    reference = plan_.contenders[0].level if plan_.contenders else BASELINE
    if differences:
        named = "; ".join(f"{level}: {why}" for level, why in differences.items())
        return (f"Do not ship {', '.join(differences)}: it does not behave like the "
                f"{reference} build ({named}). A miscompilation or an unsafe flag "
                "(-ffast-math, ...) shows up this way.", "output-differs")
    if len(plan_.contenders) < 2:
        return ("Only one build of this program runs on this CPU: nothing to compare. "
                "Run compare on a CPU with a higher level, or add variant builds.",
                "nothing-to-compare")
    if not measurement.rounds:
        return "No measurement: a build could not be run.", "not-measured"
    by_pair = {(c.level, c.reference): c for c in comparisons}
    beaten = [by_pair[(served, low.level)] for low in plan_.contenders
              if (served, low.level) in by_pair
              and by_pair[(served, low.level)].verdict is stats.Verdict.SLOWER]
    if beaten:
        worst = min(beaten, key=lambda c: c.wall.estimate)
        return (f"{served} is slower than {worst.reference} on this CPU "
                f"({_times(worst.wall)} as fast); glibc would serve {served}. Drop the "
                f"{served} build (or find out why it is slower): this CPU would run "
                f"{worst.reference}'s.", "served-is-slower")
    if served == reference:
        return (f"glibc would serve the {reference} build here: the variants present are "
                "for levels this CPU does not search.", "baseline-served")
    over_base = by_pair.get((served, reference))
    assert over_base is not None
    band = f"±{settings.tolerance:.0%}"
    if over_base.verdict is stats.Verdict.FASTER:
        return (f"{served} is {_times(over_base.wall)} as fast as the {reference} on this "
                f"CPU, and glibc would serve it: worth shipping.", "worth-shipping")
    if over_base.verdict is stats.Verdict.SAME:
        return (f"{served} is no faster than the {reference} on this CPU "
                f"({_times(over_base.wall)}, within {band}): the variant gains nothing "
                "here; ship it only if other CPUs gain.", "no-gain")
    if over_base.verdict is stats.Verdict.SLOWER:
        return (f"{served} is slower than the {reference} on this CPU "
                f"({_times(over_base.wall)} as fast); glibc would serve {served}. "
                f"Drop the {served} build.", "served-is-slower")
    by_cpu = ""
    if over_base.cpu_verdict is not stats.Verdict.UNCLEAR:
        by_cpu = (f" By CPU time, which other load disturbs less, it is "
                  f"{_times(over_base.cpu)} as fast ({over_base.cpu_verdict.value}).")
    return (f"Inconclusive after {measurement.rounds} rounds ({measurement.stopped_by}): "
            f"{served} is {_times(over_base.wall)} as fast as the {reference}.{by_cpu} "
            "Measure longer (--budget) or on a quieter machine.", "inconclusive")


def _summary_data(summary: stats.Summary) -> dict[str, float]:
    return {"median": summary.median, "q1": summary.q1, "q3": summary.q3,
            "min": summary.low, "max": summary.high}


def _ratio_data(ratio: stats.Ratio) -> dict[str, float | None]:
    return {"estimate": ratio.estimate, "low": ratio.low,
            "high": None if math.isinf(ratio.high) else ratio.high}


def _unit(value: float) -> tuple[float, str]:
    """The scale and suffix to show ``value`` seconds with."""
    if value >= 1:
        return 1.0, "s"
    return (1e3, "ms") if value >= 1e-3 else (1e6, "µs")


def _seconds(value: float) -> str:
    scale, suffix = _unit(value)
    return f"{value * scale:.3g} {suffix}" if scale == 1e6 else f"{value * scale:.2f} {suffix}"


def _spread(summary: stats.Summary) -> str:
    """The quartiles, in the median's unit."""
    scale, suffix = _unit(summary.median)
    return f"{summary.q1 * scale:.2f}–{summary.q3 * scale:.2f} {suffix}"


def render(result: Result, root: str, argv: Sequence[str], stdin: str,
           detection: Mapping[str, str], settings: Settings) -> Report:
    """The report of ``result``, as text and as the JSON document."""
    plan_, measurement = result.plan, result.measurement
    samples = measurement.samples
    over_reference = {c.level: c for c in result.comparisons
                      if plan_.contenders and c.reference == plan_.contenders[0].level}
    text = [f"{plan_.relpath} in {root}: {len(plan_.contenders)} builds, "
            f"{measurement.rounds} rounds in {measurement.elapsed:.1f} s "
            f"({measurement.stopped_by}); level {detection['level']} "
            f"(decided by {detection['decided_by']})"]
    rows = []
    candidates = []
    for contender in plan_.contenders:
        level = contender.level
        runs = samples[level].runs
        wall = stats.summarize(samples[level].walls) if runs else None
        cpu = stats.summarize(samples[level].cpus) if runs else None
        comparison = over_reference.get(level)
        mark = " (served)" if level == plan_.served else ""
        if wall and cpu:
            speed = _times(comparison.wall) if comparison else "1.00× (reference)"
            rows.append(f"  {level + mark:<20} {_seconds(wall.median):>11}  {_spread(wall):<20}"
                        f" {_seconds(cpu.median):>10}   {speed}"
                        + ("" if comparison is None else f", {comparison.verdict.value}"))
        candidates.append({
            "level": level,
            "path": contender.candidate.path,
            "source": contender.candidate.source,
            "served": level == plan_.served,
            "runs": len(runs),
            "wall_seconds": _summary_data(wall) if wall else None,
            "cpu_seconds": _summary_data(cpu) if cpu else None,
            "status": samples[level].first.describe_status(),
            "exit_status": samples[level].first.status,
            "matches_baseline": level not in result.differences,
            "difference": result.differences.get(level),
        })
    if rows:
        text.append(f"  {'build':<20} {'wall median':>11}  {'quartiles':<20} {'cpu median':>10}"
                    f"   speed-up over {plan_.contenders[0].level} "
                    f"({settings.confidence:.0%} interval)")
        text += rows
    pairs = [c for c in result.comparisons if c.reference != plan_.contenders[0].level]
    text += [f"  {c.level} over {c.reference}: {_times(c.wall)}, {c.verdict.value}"
             for c in pairs]
    text += [f"  differs: {level}: {why}" for level, why in result.differences.items()]
    text += [f"  note: {note}" for note in result.notes]
    text.append(result.advice)
    data: dict[str, Any] = {
        "schema": SCHEMA,
        "root": root,
        "relpath": plan_.relpath,
        "argv": list(argv),
        "stdin": stdin,
        "level": detection["level"],
        "decided_by": detection["decided_by"],
        "served": plan_.served,
        "reference": plan_.contenders[0].level if plan_.contenders else None,
        "rounds": measurement.rounds,
        "elapsed_seconds": measurement.elapsed,
        "stopped_by": measurement.stopped_by,
        "conclusive": measurement.conclusive,
        "settings": {"budget_seconds": settings.budget, "min_rounds": settings.min_rounds,
                     "max_rounds": settings.max_rounds, "tolerance": settings.tolerance,
                     "confidence": settings.confidence},
        "load_average": list(os.getloadavg()),
        "candidates": candidates,
        "comparisons": [{"level": c.level, "reference": c.reference,
                         "wall_speedup": _ratio_data(c.wall), "cpu_speedup": _ratio_data(c.cpu),
                         "verdict": c.verdict.value, "cpu_verdict": c.cpu_verdict.value}
                        for c in result.comparisons],
        "not_measured": [{"level": level, "path": path, "reason": reason}
                         for level, path, reason in plan_.left_out],
        "notes": list(result.notes),
        "advice": result.advice,
        "advice_code": result.advice_code,
    }
    return Report(text, data)


# -- the command's shell -------------------------------------------------------------------

DEV_NULL = "/dev/null"


def open_stdin(given: str | None, scratch_dir: str | None = None) -> tuple[int, str]:
    """The fd every run reads as standard input, and how to describe it: the regular file
    ``given``, rewound before each run; else /dev/null when our own standard input is a
    terminal or closed; else all of our standard input (or of ``given``, a pipe), read once
    into a scratch file that is rewound before each run."""
    if given is not None:
        try:
            source = os.open(given, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as exc:
            raise PathError(f"--stdin {given}: {exc.strerror}") from None
        if stat.S_ISREG(os.fstat(source).st_mode):
            return source, given
        name = given
    else:
        try:
            interactive = os.isatty(0)
            mode = os.fstat(0).st_mode
        except OSError:
            interactive = True
        if interactive:
            return os.open(DEV_NULL, os.O_RDONLY | os.O_CLOEXEC), DEV_NULL
        if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and sys.stderr.isatty():
            print("compare: reading standard input to its end, to feed every run "
                  "(--stdin /dev/null feeds nothing)", file=sys.stderr)
        source, name = 0, "standard input"
    copy = scratch_file(scratch_dir)
    size = 0
    try:
        while chunk := os.read(source, 1 << 20):
            size += os.write(copy, chunk)
    finally:
        if source != 0:
            os.close(source)
    return copy, f"{name} ({size} bytes, read once)"


class TerminalProgress:
    """One line on a terminal, rewritten after each round (nothing when not a terminal)."""

    def __init__(self, stream: TextIO, settings: Settings) -> None:
        self.stream = stream if stream.isatty() else None
        self.settings = settings

    def __call__(self, rounds: int, elapsed: float, samples: Mapping[str, Samples]) -> None:
        if self.stream is None:
            return
        levels = list(samples)
        base = samples[levels[0]].walls
        shown = " ".join(
            f"{level} {stats.speedup(base[-50:], samples[level].walls[-50:]).estimate:.2f}×"
            for level in levels[1:])
        self.stream.write(f"\rround {rounds}, {elapsed:.0f}/{self.settings.budget:.0f} s: "
                          f"{shown}\033[K")
        self.stream.flush()

    def done(self) -> None:
        if self.stream is not None:
            self.stream.write("\r\033[K")
            self.stream.flush()


def _links_out_vouched(store: Store, relpath: str) -> Store:
    """``store`` with each candidate of ``relpath`` that is a symlink out of ROOT marked
    untrusted when a non-root user could change where it leads. The view shows such a link as
    it is and the kernel follows it for the caller; compare runs it, as root, and so must
    vouch for it as for a build inside ROOT (:func:`~hwcaps_fs.store.files.untrusted_path`)."""
    found = dict(store.candidates(relpath))
    if not found:
        return store
    for level, candidate in found.items():
        if candidate.unfollowed_link and candidate.untrusted is None:
            reason = untrusted_path(os.path.join(store.root, candidate.path))
            found[level] = dataclasses.replace(candidate, untrusted=reason)
    return dataclasses.replace(store, files={**store.files, relpath: found})


def run_compare(store: Store, relpath: str, target: Target, detection: Mapping[str, str],
                args: Sequence[str], stdin: str | None, settings: Settings,
                check_output: bool = True) -> tuple[Report, int]:
    """``hwcaps-fs compare``: plan, measure, judge; the report and the exit status (1 when a
    build does not behave like the baseline or cannot be run)."""
    if target.require_trusted:
        store = _links_out_vouched(store, relpath)
    plan_ = plan(relpath, store, target)
    if not plan_.contenders:
        why = "; ".join(f"{show(path)}: {reason}" for _, path, reason in plan_.left_out)
        raise PathError(f"{show(relpath)}: no build in {show(store.root)} runs on this CPU "
                        f"({why or 'hwcaps-fs which says why'})")
    argv = [posixpath.basename(relpath), *args]
    stdin_fd, stdin_text = open_stdin(stdin)
    progress = TerminalProgress(sys.stderr, settings)
    try:
        with Runner(stdin_fd, timeout=settings.timeout) as runner:
            measurement = measure(plan_, argv, os.environ, runner, store.root, settings,
                                  progress)
    finally:
        progress.done()
        os.close(stdin_fd)
    result = compare_results(plan_, measurement, settings, check_output)
    report = render(result, store.root, argv, stdin_text, detection, settings)
    failed = bool(result.differences) or not measurement.rounds
    return report, 1 if failed else 0
