"""hwcaps-fs benchmarks: every figure is a ratio against the same work done directly, in one run.

    make bench          (= .venv/bin/python -m bench.run --out bench/results.md)

Exec latency is measured with bench/execbench.c (posix_spawn + waitpid), interleaved: R rounds,
each running every configuration for N spawns in turn, so that whatever else the machine does
spreads over all configurations alike. Medians and spreads (p10, p90) are pooled over rounds.
Nothing in the output is typed by hand: README.md quotes a summary of this file's output
(``--readme``; ``--summarize`` requotes the last results without measuring).
"""

from __future__ import annotations

import argparse
import compileall
import contextlib
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tests.builders import gcc
from tests.mounting import daemon_pids

HERE = Path(__file__).resolve().parent
HWCAPS_FS = [sys.executable, "-m", "hwcaps_fs"]
#: The mount option of the stock exec path (one request per exec), measured beside the fast
#: path (docs/fast-path.md) in every comparison.
STOCK = "fastpath=off"
LEVELS = ("x86-64", "x86-64-v2", "x86-64-v3", "x86-64-v4")


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True)


@dataclass
class Stats:
    median: float
    p10: float
    p90: float
    n: int

    @classmethod
    def of(cls, samples: list[float]) -> Stats:
        ordered = sorted(samples)
        if len(ordered) < 2:
            return cls(ordered[0], ordered[0], ordered[0], 1)
        deciles = statistics.quantiles(ordered, n=10)
        return cls(statistics.median(ordered), deciles[0], deciles[-1], len(ordered))


@contextlib.contextmanager
def mounted(root: Path, mountpoint: Path, *options: str) -> Iterator[float]:
    """Mount, yield how long the mount command took to return with the mount live, unmount."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    opts = ["-o", ",".join(options)] if options else []
    start = time.perf_counter()
    run(*HWCAPS_FS, "mount", "--root", root, *opts, mountpoint)
    elapsed = time.perf_counter() - start
    try:
        yield elapsed
    finally:
        subprocess.run([*HWCAPS_FS, "umount", str(mountpoint)], capture_output=True)


def wait_mounted(mountpoint: Path, daemon: subprocess.Popen[bytes], timeout: float,
                 what: str) -> None:
    """Wait until ``daemon`` has mounted ``mountpoint``; RuntimeError naming ``what`` if it
    exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while not os.path.ismount(mountpoint):
        if time.monotonic() > deadline or daemon.poll() is not None:
            raise RuntimeError(f"{what} did not mount")
        time.sleep(0.01)


@contextlib.contextmanager
def floor_mounted(program: Path, mountpoint: Path) -> Iterator[Path]:
    """bench/floor_fs.py serving ``program`` at ``mountpoint``; yields the path to exec."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    daemon = subprocess.Popen([sys.executable, str(HERE / "floor_fs.py"), str(program),
                               str(mountpoint)])
    try:
        wait_mounted(mountpoint, daemon, 10, "bench/floor_fs.py")
        yield mountpoint / "prog"
    finally:
        subprocess.run(["umount", str(mountpoint)], capture_output=True)
        daemon.wait(timeout=10)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Bench:
    def __init__(self, work: Path, rounds: int, spawns: int, repeats: int = 20,
                 quick: bool = False) -> None:
        self.work = work
        self.rounds = rounds
        self.spawns = spawns
        self.repeats = repeats  # of the slower measures (listings, execs after idle)
        self.quick = quick
        self.lines: list[str] = []
        self.execbench = gcc(work / "execbench", HERE / "execbench.c")

    def sizes(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """Store sizes and counts as given, or a twentieth of them for ``--quick`` (a check
        that the bench runs, not a measurement)."""
        return tuple(max(10, n // 20) for n in sizes) if self.quick else sizes

    def emit(self, line: str = "") -> None:
        print(line, flush=True)
        self.lines.append(line)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.emit("| " + " | ".join(header) + " |")
        self.emit("|" + "---|" * len(header))
        for row in rows:
            self.emit("| " + " | ".join(row) + " |")
        self.emit()

    def samples(self, argv: list[str], n: int, sleep_ms: int = 0, warmup: int = -1) -> list[float]:
        cmd = [str(self.execbench), "-w", str(warmup), "-s", str(sleep_ms), str(n), *argv]
        return [float(x) for x in run(*cmd).stdout.split()]

    def interleaved(self, configs: dict[str, list[str]], n: int, rounds: int, sleep_ms: int = 0,
                    warmup: int = -1) -> dict[str, Stats]:
        pooled: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(rounds):
            for name, argv in configs.items():
                pooled[name] += self.samples(argv, n, sleep_ms, warmup)
        return {name: Stats.of(values) for name, values in pooled.items()}

    def latency_table(self, stats: dict[str, Stats]) -> None:
        """Latencies with their ratios to the configuration called "direct"."""
        base = stats["direct"]
        self.table(["configuration", "median", "p10–p90", "× median", "× p10", "n"],
                   [[name, f"{s.median:.0f}", f"{s.p10:.0f}–{s.p90:.0f}",
                     f"{s.median / base.median:.2f}", f"{s.p10 / base.p10:.2f}", str(s.n)]
                    for name, s in stats.items()])


def build_programs(work: Path) -> dict[str, Path]:
    """The programs whose exec is timed: static, dynamic, bash."""
    src = work / "src"
    src.mkdir(parents=True, exist_ok=True)
    true_c = src / "true.c"
    true_c.write_text("int main(void) { return 0; }\n")
    programs = {
        "static": gcc(src / "static_true", true_c, "-static"),
        "dynamic": gcc(src / "dyn_true", true_c),
        "bash": src / "bash",
    }
    shutil.copy2("/usr/bin/bash", programs["bash"])
    return programs


def make_store(root: Path, programs: dict[str, Path], extra_names: int = 0) -> None:
    """A glibc-layout store: each program as the baseline and as an x86-64-v2 variant (served on
    every machine of that level), plus ``extra_names`` small scripts without variants."""
    if root.exists():
        shutil.rmtree(root)
    for name, path in programs.items():
        for target in (root / "bin" / name, root / "glibc-hwcaps/x86-64-v2/bin" / name):
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    for i in range(extra_names):
        script = root / "bin" / f"name{i:05d}"
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)


def paged_in_by_exec(program: Path, copy: Path) -> Path:
    """A copy of ``program`` whose page cache the exec will fill: written, flushed, evicted
    (``cp`` leaves large folios in ext4's page cache, an exec's faults order-0 pages, the only
    kind a FUSE file has on Linux 6.18: docs/fast-path.md "Static binaries")."""
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(program, copy)
    fd = os.open(copy, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return copy


def bench_exec(b: Bench, programs: dict[str, Path]) -> None:
    """Warm exec latency: both presentations, both deployments, three programs."""
    work = b.work
    direct_dir = work / "direct"
    make_store(direct_dir, programs)
    stores = {name: work / f"store-{name}" for name in ("files", "links", "inplace", "stock")}
    for root in stores.values():
        make_store(root, programs)
    linkdir = work / "usrbin"
    linkdir.mkdir(exist_ok=True)

    b.emit("## Warm exec latency (µs per posix_spawn + waitpid)")
    b.emit()
    b.emit(f"{b.rounds} rounds × {b.spawns} spawns per configuration, interleaved. "
           "'store' = the dedicated-store deployment: the store mounted over itself, run "
           "through a symlink into it (as /usr/bin/foo → /opt/hwcaps/bin/foo); 'in place' = "
           "the bin directory mounted over itself, run by its own path; 'stock path' = "
           f"`-o {STOCK}`, one request to the daemon per exec; 'pyfuse3 floor' = "
           "bench/floor_fs.py, the least a stock pyfuse3 filesystem does per exec (one file, "
           "no checks), for how far hwcaps-fs is from its stack's floor; 'direct, paged in by "
           "exec' = the same binary on ext4 with its page cache filled by its exec's own page "
           "faults (order-0 pages, as the view's always are) rather than by the copy that wrote "
           "it (large folios), for the part of a gap that is page size, not FUSE "
           "(docs/fast-path.md, \"Static binaries\"). Ratios are against executing the same "
           "binary directly from ext4 in the same run.")
    b.emit()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mounted(stores["files"], stores["files"]))
        stack.enter_context(mounted(stores["links"], stores["links"], "presentation=symlinks"))
        stack.enter_context(mounted(stores["inplace"], stores["inplace"]))
        stack.enter_context(mounted(stores["stock"], stores["stock"], STOCK))
        for kind, program in programs.items():
            args = ["-c", "true"] if kind == "bash" else []
            for name in ("files", "links", "stock"):
                link = linkdir / f"{kind}-{name}"
                link.unlink(missing_ok=True)
                link.symlink_to(stores[name] / "bin" / kind)
            direct = direct_dir / "glibc-hwcaps/x86-64-v2/bin" / kind
            with floor_mounted(direct, work / f"m-floor-{kind}") as floor:
                paged = paged_in_by_exec(direct, work / "paged" / kind)
                configs = {
                    "direct": [str(direct), *args],
                    "direct, paged in by exec": [str(paged), *args],
                    "store, files": [str(linkdir / f"{kind}-files"), *args],
                    "store, symlinks": [str(linkdir / f"{kind}-links"), *args],
                    "in place, files": [str(stores["inplace"] / "bin" / kind), *args],
                    "store, files, stock path": [str(linkdir / f"{kind}-stock"), *args],
                    "pyfuse3 floor": [str(floor), *args],
                }
                stats = b.interleaved(configs, b.spawns, b.rounds)
            b.emit(f"**{kind}** (`{program.name}{' -c true' if args else ''}`)")
            b.emit()
            b.latency_table(stats)


@contextlib.contextmanager
def both_presentations(b: Bench, programs: dict[str, Path], name: str) -> Iterator[dict[str, str]]:
    """A store mounted in both presentations, and on the stock path: the dynamic program's
    path directly and through each mount."""
    store = b.work / f"store-{name}"
    make_store(store, programs)
    with mounted(store, b.work / f"m-{name}-files"), \
            mounted(store, b.work / f"m-{name}-links", "presentation=symlinks"), \
            mounted(store, b.work / f"m-{name}-stock", STOCK):
        yield {
            "direct": str(store / "glibc-hwcaps/x86-64-v2/bin/dynamic"),
            "files": str(b.work / f"m-{name}-files/bin/dynamic"),
            "symlinks": str(b.work / f"m-{name}-links/bin/dynamic"),
            "files, stock path": str(b.work / f"m-{name}-stock/bin/dynamic"),
        }


def bench_idle(b: Bench, programs: dict[str, Path]) -> None:
    """Exec after the daemon has idled: spawns spaced 0.5 s apart."""
    with both_presentations(b, programs, "idle") as paths:
        configs = {name: [path] for name, path in paths.items()}
        stats = b.interleaved(configs, n=2, rounds=b.repeats, sleep_ms=500, warmup=0)
    b.emit("## Exec after idle (dynamic binary, spawns 0.5 s apart)")
    b.emit()
    b.latency_table(stats)


def bench_parallel(b: Bench, programs: dict[str, Path]) -> None:
    """Parallel exec throughput: 4 spawners at once."""
    with both_presentations(b, programs, "par") as configs:
        rates: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(min(3, b.repeats)):
            for name, path in configs.items():
                out = run(b.execbench, "-w", "20", "-p", "4", str(b.spawns * 2), path).stdout
                rates[name].append(float(out))
    b.emit("## Parallel exec throughput (4 spawners, execs per second, 3 interleaved runs)")
    b.emit()
    direct = statistics.median(rates["direct"])
    b.table(["configuration", "median exec/s", "min–max", "× direct"],
            [[name, f"{statistics.median(r):.0f}", f"{min(r):.0f}–{max(r):.0f}",
              f"{statistics.median(r) / direct:.2f}"] for name, r in rates.items()])


def timed_runs(argv: list[str], runs: int) -> Stats:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        samples.append((time.perf_counter() - start) * 1000)
    return Stats.of(samples)


#: The mounts a listing is timed through, by label: their -o options.
LISTING_MOUNTS: dict[str, tuple[str, ...]] = {
    "files": (),
    "symlinks": ("presentation=symlinks",),
    "files, xattr=off": ("xattr=off",),
    "files, stock path": (STOCK,),
}


def bench_listing(b: Bench, programs: dict[str, Path]) -> None:
    """ls and ls -l of a 3,000-entry directory, cold (first after a fresh mount) and warm."""
    store = b.work / "store-ls"
    make_store(store, programs, extra_names=3000 - len(programs))
    rows = []
    for command in (["ls"], ["ls", "-l"]):
        direct = timed_runs([*command, str(store / "bin")], b.repeats)
        label = " ".join(command)
        rows.append([f"`{label}` direct", f"{direct.median:.1f}", "1.00", ""])
        for presentation, options in LISTING_MOUNTS.items():
            mnt = b.work / "m-ls"
            colds = []
            for _ in range(3):
                with mounted(store, mnt, *options):
                    colds.append(timed_runs([*command, str(mnt / "bin")], 1).median)
            with mounted(store, mnt, *options):
                warm = timed_runs([*command, str(mnt / "bin")], b.repeats)
            cold = statistics.median(colds)
            rows.append([f"`{label}` {presentation}", f"{warm.median:.1f}",
                         f"{warm.median / direct.median:.2f}",
                         f"{cold:.1f} ({cold / direct.median:.2f}×)"])
    b.emit("## Listing a 3,000-entry directory (ms)")
    b.emit()
    b.table(["command", "warm median", "× direct", "cold (first after mount)"], rows)


def drop_file_cache(path: Path) -> None:
    """Evict one file from the page cache (POSIX_FADV_DONTNEED), no global drop_caches."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def read_seconds(path: Path) -> float:
    start = time.perf_counter()
    with path.open("rb", buffering=0) as f:
        while f.read(1 << 20):
            pass
    return time.perf_counter() - start


def bench_first_exec_and_read(b: Bench, programs: dict[str, Path]) -> None:
    """The first exec of a variant after mount, and reading a 100 MB file cold and warm."""
    store = b.work / "store-read"
    make_store(store, programs)
    big = store / "bin/big"
    with big.open("wb") as f:
        for _ in range(100):
            f.write(os.urandom(1 << 20))
    big.chmod(0o755)
    mnt = b.work / "m-read"
    firsts, directs = [], []
    for _ in range(5):
        target = store / "glibc-hwcaps/x86-64-v2/bin/static"
        directs.append(b.samples([str(target)], 1, warmup=0)[0])
        with mounted(store, mnt):
            firsts.append(b.samples([str(mnt / "bin/static")], 1, warmup=0)[0])
    mb = big.stat().st_size / 1e6
    read_seconds(big)
    direct_warm = statistics.median(read_seconds(big) for _ in range(5))
    paths = {"": (), ", stock path": (STOCK,)}
    cold: dict[str, list[float]] = {name: [] for name in paths}
    warm: dict[str, list[float]] = {name: [] for name in paths}
    with contextlib.ExitStack() as stack:
        views = {name: b.work / f"m-read-{index}" for index, name in enumerate(paths)}
        for name, options in paths.items():
            stack.enter_context(mounted(store, views[name], *options))
        for _ in range(5):  # interleaved; the backing file stays in memory throughout
            for name, view in views.items():
                drop_file_cache(view / "bin/big")
                cold[name].append(read_seconds(view / "bin/big"))
                warm[name].append(read_seconds(view / "bin/big"))
    b.emit("## First exec after mount, and sequential reads")
    b.emit()
    b.emit("FUSE cache cold: the view's pages of the file dropped (POSIX_FADV_DONTNEED), the "
           "backing file in memory; 5 interleaved runs each, median.")
    b.emit()
    first, direct_first = statistics.median(firsts), statistics.median(directs)
    rows = [["first exec of the static variant after a fresh mount (µs, median of 5)",
             f"{first:.0f}", f"{first / direct_first:.2f}"]]
    for name in paths:
        cold_s, warm_s = statistics.median(cold[name]), statistics.median(warm[name])
        rows += [[f"read 100 MB, FUSE cache cold{name} (MB/s)", f"{mb / cold_s:.0f}",
                  f"{direct_warm / cold_s:.2f}"],
                 [f"read 100 MB, FUSE cache warm{name} (MB/s)", f"{mb / warm_s:.0f}",
                  f"{direct_warm / warm_s:.2f}"]]
    rows.append(["read 100 MB directly, page cache warm (MB/s)", f"{mb / direct_warm:.0f}",
                 "1.00"])
    b.table(["measure", "value", "× direct"], rows)


#: Store sizes of the scale bench, and the size its updates are measured at.
SCALE_NAMES = (100, 1000, 5000, 10000, 100000)
UPDATE_NAMES = 15000
#: Mounts of each store size: a mount's time varies by a fifth from one to the next here.
MOUNTS_PER_SIZE = 5


def daemon_cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def import_seconds(runs: int = 5) -> float:
    """Median wall time of a Python that imports what ``hwcaps-fs mount`` runs (the daemon
    starts on the boot path)."""
    code = "import hwcaps_fs.commands.cli, hwcaps_fs.commands.mount, hwcaps_fs.fuse.serve"
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        run(sys.executable, "-c", code)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def byte_compile() -> None:
    """Byte-compile the package, as every installation does (pip, dh_python3): start-up is
    then timed as it runs on a system, not with every module compiled again at each start
    (which it is where PYTHONDONTWRITEBYTECODE is set and no .pyc files were left)."""
    compileall.compile_dir(HERE.parent / "hwcaps_fs", quiet=1)


def bench_scale(b: Bench, programs: dict[str, Path]) -> None:
    """Mount-ready time, daemon RSS and descriptors by store size, and the import time."""
    byte_compile()
    rows = []
    for names in b.sizes(SCALE_NAMES):
        store = b.work / f"store-{names}"
        make_store(store, programs, extra_names=names - len(programs))
        mnt = b.work / f"m-{names}"
        readies = []
        for _ in range(MOUNTS_PER_SIZE):
            with mounted(store, mnt) as ready:
                [pid] = daemon_pids(mnt)
                readies.append(ready)
                rss, fds = rss_mb(pid), open_fds(pid)
        readies.sort()
        rows.append([f"{names:,}", f"{statistics.median(readies):.2f}",
                     f"{readies[0]:.2f}–{readies[-1]:.2f}", f"{rss:.1f}", str(fds)])
        shutil.rmtree(store)
    b.emit("## Mount-ready time, daemon memory and descriptors")
    b.emit()
    b.emit(f"{MOUNTS_PER_SIZE} mounts of each store, one after the other; memory and "
           "descriptors of the daemon of the last one.")
    b.emit()
    b.table(["names", "mount command returns, mount live (s, median)", "range (s)",
             "daemon RSS (MB)", "daemon descriptors"], rows)
    b.emit(f"Importing what `hwcaps-fs mount` runs takes {import_seconds():.2f} s (median of 5 "
           "fresh interpreters; the package byte-compiled, as installed); a child process "
           "scans the store meanwhile (hwcaps_fs/fuse/first_scan.py).")
    b.emit()


def bench_updates(b: Bench, programs: dict[str, Path]) -> None:
    """Daemon CPU per change in a large store, and its memory after many distinct names came
    and went (what anyone who can write under ROOT can make the daemon do)."""
    names = b.sizes((UPDATE_NAMES,))[0]
    store = b.work / "store-updates"
    make_store(store, programs, extra_names=names - len(programs))
    unknown = store / "glibc-hwcaps/x86-64-v9/bin/name00000"
    unknown.parent.mkdir(parents=True)
    shutil.copy2(programs["dynamic"], unknown)
    variant = store / "glibc-hwcaps/x86-64-v2/bin/dynamic"
    churned = store / "bin/churn"
    churned.mkdir()
    mnt = b.work / "m-updates"
    changes = b.sizes((40,))[0]

    def touch(path: Path) -> None:
        os.utime(path)

    def upgrade(path: Path) -> None:
        new = path.with_name(f".{path.name}.new")
        shutil.copy2(path, new)
        new.rename(path)

    def make_or_remove(path: Path) -> None:
        if path.exists():
            path.rmdir()
        else:
            path.mkdir()

    cases = [("touch of a name in bin/", touch, store / "bin/name00000"),
             ("touch in an unknown level directory", touch, unknown),
             ("rename-over upgrade of a variant", upgrade, variant),
             ("a directory made or removed in bin/", make_or_remove, store / "bin/sub")]
    rows = []
    with mounted(store, mnt):
        [pid] = daemon_pids(mnt)
        for what, change, path in cases:
            time.sleep(1)
            before = daemon_cpu_seconds(pid)
            for _ in range(changes):
                change(path)
                time.sleep(0.7)  # each change its own update (they are coalesced for 0.5 s)
            per_change = (daemon_cpu_seconds(pid) - before) / changes
            rows.append([what, f"{per_change * 1000:.1f}"])
        rss_before = rss_mb(pid)
        distinct = b.sizes((20000,))[0]
        for batch in range(0, distinct, 500):
            for i in range(batch, batch + 500):
                (churned / f"gone{i:06d}").write_text("#!/bin/sh\n")
            time.sleep(0.7)
            for i in range(batch, batch + 500):
                (churned / f"gone{i:06d}").unlink()
            time.sleep(0.7)
        rss_after = rss_mb(pid)
    shutil.rmtree(store)
    b.emit(f"## Updates in a store of {names:,} names")
    b.emit()
    b.table(["change (each applied alone)", "daemon CPU per change (ms)"], rows)
    b.emit(f"Daemon RSS {rss_before:.1f} MB before and {rss_after:.1f} MB after {distinct:,} "
           "distinct names were added and removed, 500 at a time.")
    b.emit()


def bench_alternatives(b: Bench, programs: dict[str, Path]) -> None:
    """What a user would do instead: a #!/bin/sh wrapper that picks the variant, PATH ordering."""
    store = b.work / "store-alt"
    make_store(store, programs)
    variant = store / "glibc-hwcaps/x86-64-v2/bin/dynamic"
    wrapper = b.work / "wrapper/dynamic"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    wrapper.write_text(f"""#!/bin/sh
# pick the best variant, as a packager's wrapper would
for level in x86-64-v4 x86-64-v3 x86-64-v2; do
  if /lib64/ld-linux-x86-64.so.2 --help | grep -q "$level (supported"; then
    p={store}/glibc-hwcaps/$level/bin/dynamic
    [ -x "$p" ] && exec "$p" "$@"
  fi
done
exec {store}/bin/dynamic "$@"
""")
    wrapper.chmod(0o755)
    path_dirs = ":".join(str(store / "glibc-hwcaps" / lvl / "bin")
                         for lvl in ("x86-64-v4", "x86-64-v3", "x86-64-v2"))
    with mounted(store, b.work / "m-alt"):
        configs = {
            "direct": [str(variant)],
            "hwcaps-fs, files": [str(b.work / "m-alt/bin/dynamic")],
            "#!/bin/sh wrapper": [str(wrapper)],
            "PATH ordering (sh -c, lookup in 3 dirs)": [
                "/bin/sh", "-c", f"PATH={path_dirs}:{store}/bin; dynamic"],
            "sh -c running the variant by absolute path": ["/bin/sh", "-c", str(variant)],
        }
        stats = b.interleaved(configs, max(b.spawns // 5, 20), b.rounds)
    b.emit("## The alternatives, measured the same way (dynamic binary, µs)")
    b.emit()
    b.emit("PATH ordering needs a shell to search PATH: compare it with the last row, the same "
           "shell running the variant by absolute path.")
    b.emit()
    b.latency_table(stats)


def bench_gain(b: Bench, programs: dict[str, Path]) -> None:
    """The point of it all: the demo's compute-heavy program, baseline vs the variant served."""
    store = b.work / "store-demo"
    source = HERE / "hwcaps-demo.c"
    for level in LEVELS:
        sub = Path("bin") if level == "x86-64" else Path("glibc-hwcaps", level, "bin")
        gcc(store / sub / "hwcaps-demo", source, "-O3", "-ffast-math", "-mneeded",
            f"-march={level}", f'-DLEVEL="{level}"')
    rounds = "200000"
    with mounted(store, b.work / "m-demo"):
        served_level = run(b.work / "m-demo/bin/hwcaps-demo").stdout.strip()
        times: dict[str, list[float]] = {"baseline": [], f"served ({served_level})": []}
        for _ in range(5):
            for name, path in (("baseline", store / "bin/hwcaps-demo"),
                               (f"served ({served_level})", b.work / "m-demo/bin/hwcaps-demo")):
                out = run(path, rounds).stdout.split()[-1]
                times[name].append(float(out.split("=")[1]))
    base = statistics.median(times["baseline"])
    b.emit("## The gain: bench/hwcaps-demo.c, baseline build vs the build served here")
    b.emit()
    b.table(["build", "median seconds (5 runs)", "speed-up"],
            [[name, f"{statistics.median(t):.3f}", f"{base / statistics.median(t):.2f}×"]
             for name, t in times.items()])


BENCHES: dict[str, Callable[[Bench, dict[str, Path]], None]] = {
    "exec": bench_exec,
    "idle": bench_idle,
    "parallel": bench_parallel,
    "listing": bench_listing,
    "read": bench_first_exec_and_read,
    "scale": bench_scale,
    "updates": bench_updates,
    "alternatives": bench_alternatives,
    "gain": bench_gain,
}


README_START = "<!-- bench results: start -->"
README_END = "<!-- bench results: end -->"


@dataclass(frozen=True)
class Headline:
    """One figure README.md quotes from results.md: the cell in ``column`` of the row named
    ``row`` (what follows `` (`` in a name is left out) in the table under the heading that
    starts with ``section`` (and the bold sub-heading ``part``, if any), then ``unit``; beside
    it the same cell of the row ``stock``, the same measure on the stock exec path."""

    measure: str
    section: str
    part: str
    row: str
    column: str
    unit: str = "× direct"
    stock: str | None = None


#: README.md's summary of the results. A headline whose row the run did not produce (an
#: ``--only`` run, a renamed configuration) is left out.
HEADLINES = (
    Headline("warm exec, static binary (median)", "Warm exec", "static", "store, files",
             "× median", stock="store, files, stock path"),
    Headline("warm exec, dynamic binary (median)", "Warm exec", "dynamic", "store, files",
             "× median", stock="store, files, stock path"),
    Headline("the same on a minimal stock pyfuse3 file system (the stack's floor)",
             "Warm exec", "dynamic", "pyfuse3 floor", "× median"),
    Headline("warm exec, `bash -c true`", "Warm exec", "bash", "store, files", "× median",
             stock="store, files, stock path"),
    Headline("exec after 0.5 s idle", "Exec after idle", "", "files", "× median",
             stock="files, stock path"),
    Headline("4 parallel spawners, execs per second", "Parallel exec", "", "files",
             "× direct", stock="files, stock path"),
    Headline("`ls -l` of 3,000 entries", "Listing", "", "`ls -l` files", "× direct",
             stock="`ls -l` files, stock path"),
    Headline("`ls` of 3,000 entries", "Listing", "", "`ls` files", "× direct",
             stock="`ls` files, stock path"),
    Headline("`ls -l` of 3,000 entries, `-o xattr=off`", "Listing", "", "`ls -l` files, xattr=off",
             "× direct"),
    Headline("read a 100 MB file, view cold, backing file in memory", "First exec", "",
             "read 100 MB, FUSE cache cold", "value", " MB/s",
             stock="read 100 MB, FUSE cache cold, stock path"),
    Headline("mount ready, 5,000 names (median of 5)", "Mount-ready", "", "5,000",
             "mount command returns, mount live (s, median)", " s"),
    Headline("daemon RSS, 10,000 names", "Mount-ready", "", "10,000", "daemon RSS (MB)", " MB"),
    Headline("bench/hwcaps-demo.c: the served build's speed-up over its baseline", "The gain", "",
             "served", "speed-up", ""),
)


def tables(lines: list[str]) -> dict[tuple[str, str], list[dict[str, str]]]:
    """The tables of a results.md by (heading, bold sub-heading), each row a dict by column
    header, with the row's name (its first cell, less any `` (...)``) under ``""``."""
    found: dict[tuple[str, str], list[dict[str, str]]] = {}
    heading = part = ""
    header: list[str] = []
    for line in lines:
        if line.startswith("#"):
            heading, part, header = line.lstrip("# "), "", []
        elif line.startswith("**"):
            part, header = line.split("**")[1], []
        elif line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in line.strip().strip("|").split(" | ")]
            if not header:
                header = cells
                found[heading, part] = []
            else:
                found[heading, part].append({"": cells[0].split(" (")[0],
                                             **dict(zip(header, cells, strict=False))})
        elif not line.startswith("|"):
            header = []
    return found


def summary(lines: list[str]) -> list[str]:
    """What README.md quotes: the run's first paragraph, the headlines, a link to the rest."""
    found = tables(lines)

    def cell(headline: Headline, name: str | None) -> str:
        for (heading, part), table in found.items():
            if heading.startswith(headline.section) and part == headline.part:
                for row in table:
                    if row[""] == name and headline.column in row:
                        return f"{row[headline.column]}{headline.unit}"
        return "–"

    rows = [f"| {headline.measure} | {cell(headline, headline.row)} | "
            f"{cell(headline, headline.stock)} |"
            for headline in HEADLINES if cell(headline, headline.row) != "–"]
    about = next(line for line in lines if line.startswith("Run "))
    return [about, "", f"| measure | through the view | stock path (`-o {STOCK}`) |",
            "|---|---|---|", *rows, "",
            "Every figure, with its spread and the configurations not shown here: "
            "[bench/results.md](bench/results.md)."]


def quote_in_readme(readme: Path, lines: list[str], start_marker: str = README_START,
                    end_marker: str = README_END) -> None:
    """Replace what stands between the markers in ``readme`` with ``lines`` (headings one
    level down), so that README.md never quotes a figure typed by hand."""
    text = readme.read_text()
    start, end = text.index(start_marker) + len(start_marker), text.index(end_marker)
    body = ["#" + line if line.startswith("#") else line for line in lines]
    readme.write_text(text[:start] + "\n" + "\n".join(body).strip() + "\n" + text[end:])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/hwcaps-fs-bench"))
    parser.add_argument("--out", type=Path, default=HERE / "results.md")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--spawns", type=int, default=250)
    parser.add_argument("--only", choices=sorted(BENCHES), action="append")
    parser.add_argument("--quick", action="store_true",
                        help="a short run that checks the benchmarks work (2 rounds of 30 "
                        "spawns, 3 repeats, stores a twentieth of their size): its figures are "
                        "not for quoting")
    parser.add_argument("--readme", type=Path, help="also replace the summary quoted in this "
                        f"file between {README_START!r} and {README_END!r}")
    parser.add_argument("--summarize", action="store_true", help="measure nothing: quote the "
                        "summary of the existing --out file in --readme")
    args = parser.parse_args()
    if args.summarize:
        if not args.readme:
            parser.error("--summarize needs --readme")
        quote_in_readme(args.readme, summary(args.out.read_text().splitlines()))
        return 0
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    b = (Bench(args.work, rounds=2, spawns=30, repeats=3, quick=True) if args.quick
         else Bench(args.work, args.rounds, args.spawns))
    load = os.getloadavg()
    b.emit("# hwcaps-fs benchmark results")
    b.emit()
    b.emit(f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.node()}: "
           f"{platform.machine()}, {os.cpu_count()} CPUs, kernel {platform.release()}, "
           f"load average before the run {load[0]:.2f}. Command: `make bench`.")
    b.emit()
    programs = build_programs(args.work)
    started = time.monotonic()
    for name in args.only or BENCHES:
        BENCHES[name](b, programs)
    after = os.getloadavg()
    b.emit(f"Noise: load average {load[0]:.2f} before and {after[0]:.2f} after the run, which "
           f"took {time.monotonic() - started:.0f} s; the p10–p90 spread of the direct rows "
           "shows how much the machine disturbed single measurements (the ratios compare "
           "interleaved samples, so a disturbance falls on every configuration alike).")
    args.out.write_text("\n".join(b.lines) + "\n")
    if args.readme:
        quote_in_readme(args.readme, summary(b.lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
