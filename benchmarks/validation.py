"""Validation speed and memory on every shape of data, beside the cookbook-style baseline, in one run.

    python -m benchmarks.validation [--size-mib N] [--memory-size-mib N] [--shapes a,b] [--format-shapes a,b]
                                    [--memory-shapes a,b] [--repeat N] [--workers N]

The datasets are generated once, deterministically, outside the repo (benchmarks/shapes.py, in
/tmp/ftops-bench): long multi-turn conversations, ~1M-per-480-MiB short examples and classification-sized
tiny ones for speed, each validated by ftops and by the cookbook-style baseline (benchmarks/cookbook.py), three
runs each in turn, and the ratio of the median runs printed with the spread (this machine's speed drifts by a
third from minute to minute: one run of each can land on either side of that); DPO and reinforcement examples
beside the baseline once; then files of 480 MiB (long and
tiny examples) and hostile and odd files (blank lines, "{}", empty messages, millions of distinct tiny lines, a
few huge examples, one 64 MiB line) for memory, the long examples' and the odd lines' beside the baseline too.
Every run is its own fresh process; it prints wall time, MB/s, CPU time (which matters when the machine is
shared: the load is printed first) and the peak memory of its whole process tree (helpers included), as
proportional set size, sampled.

Runs beside the baseline are timed with nothing sampling them, and each kind runs once more, sampled, for its
peak. Reading every process's smaps_rollup 20 times a second took ~0.18 s of CPU per 2 s run of ftops, from the
two cores it keeps busy (its wall time grew 5-7%), and slowed the baseline more (8-14%, interleaved runs): the
ratios of timed and sampled runs were not the same. The memory-only runs are sampled: their time is printed,
not compared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Self

from benchmarks import cookbook, shapes
from shared.validation import ValidationOptions, validate_dataset

MIB = 1 << 20
DEFAULT_DIR = Path("/tmp/ftops-bench")
# name -> (shape, MiB; None: --memory-size-mib). The slow-per-line shapes are smaller: their peak does not grow
# with size any more, and hundreds of millions of "{}" lines would take minutes.
MEMORY_RUNS: dict[str, tuple[str, int | None]] = {
    "long": ("long", None), "tiny": ("tiny", None), "blank": ("blank", 16), "braces": ("braces", 32),
    "empty_messages": ("empty_messages", 96), "distinct_tiny": ("distinct_tiny", 96), "huge": ("huge", None),
    "one_line_64mib": ("one_line_64mib", 96)}
# These also run beside the baseline, once: long examples at the memory size (issue 24's own table was of 480 MiB
# files; the tokenizer's build, paid once per run, weighs less there than at the speed shapes' size), and files of
# odd lines (no usable example, or hardly any): what a line costs where nothing is counted. The others' baseline
# would only hold hundreds of MB more.
BESIDE = ("long", "blank", "braces", "empty_messages", "distinct_tiny")

_SAMPLER = r"""
import os, sys, select
root = int(sys.argv[1])
peak_total, peaks = 0, {}  # the tree's summed PSS at its highest; each process's own highest PSS

def tree(pid):
    out = [pid]
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                for child in f.read().split():
                    out += tree(int(child))
    except OSError:
        pass
    return out

def pss(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0

while True:  # a sample first: a run shorter than the wait is measured too
    now = {pid: pss(pid) for pid in tree(root) if pid != os.getpid()}
    peak_total = max(peak_total, sum(now.values()))
    for pid, value in now.items():
        peaks[pid] = max(peaks.get(pid, 0), value)
    if select.select([sys.stdin], [], [], 0.05)[0]:
        break
t = os.times()
print(t[0] + t[1], peak_total, *sorted(peaks.values(), reverse=True))  # its own CPU first: not the run's
"""


class _PeakMemory:
    """Peak memory of this process and its descendants, as proportional set size (PSS): pages shared
    between them (the helper's interpreter, the libraries) are counted once across the tree.

    PSS has no kernel high-water mark, so a separate, mostly sleeping process samples the whole tree
    every 50 ms and keeps the highest sum (a sampling thread here would compete for the GIL).
    """

    def __init__(self, sampled: bool = True) -> None:
        self.sampled = sampled  # False: nothing samples the run (a timed run), its peak stays 0
        self.peak = 0
        self.per_process: list[int] = []  # each process's own peak PSS, largest first
        self.cpu = 0.0  # the sampler's own CPU time: a child of the run, so in its os.times(), subtracted there

    def __enter__(self) -> Self:
        if self.sampled:
            self._proc = subprocess.Popen([sys.executable, "-c", _SAMPLER, str(os.getpid())],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.sampled:
            return
        out, _ = self._proc.communicate("stop\n", timeout=30)
        cpu, *values = out.split() or ["0", "0"]
        self.cpu = float(cpu)
        self.peak, self.per_process = int(values[0]), [int(v) for v in values[1:]]


def _chunks(path: Path, size: int = 4 * MIB):
    with path.open("rb") as f:
        while chunk := f.read(size):
            yield chunk


def _measure(kind: str, path: Path, workers: int | None, sampled: bool = True) -> dict[str, Any]:
    """One run (in this process, which `main` starts fresh for each): wall, CPU and, if `sampled`, peak PSS of the
    tree."""
    size = path.stat().st_size
    cpu0 = sum(os.times()[:4])
    with _PeakMemory(sampled) as mem:
        t0 = time.perf_counter()
        if kind == "ftops":
            report = validate_dataset({"train": lambda: _chunks(path)}, options=ValidationOptions(workers=workers))
            stats = report.stats
            summary = {"examples": report.examples, "tokens": stats["tokens"]["total"], "valid": report.valid,
                       "errors": len(report.errors), "warnings": len(report.warnings)}
        else:
            result = cookbook.run(path)
            summary = {"examples": result["examples"], "tokens": result["tokens"]}
        wall = time.perf_counter() - t0
    # Reading every process's smaps_rollup 20 times a second costs CPU too (more for the baseline's larger
    # heap): the sampler's own time is not the run's.
    cpu = sum(os.times()[:4]) - cpu0 - mem.cpu
    return {"kind": kind, "path": str(path), "bytes": size, "wall": wall, "cpu": cpu,
            "peak": mem.peak, "per_process": mem.per_process, **summary}


def _run_child(kind: str, path: Path, workers: int | None, sampled: bool = True) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks.validation", "--one", kind, "--path", str(path)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    if not sampled:
        argv.append("--not-sampled")
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _ensure(directory: Path, shape: str, size_mib: int) -> Path:
    path = shapes.shape_path(directory, shape, size_mib)
    if not path.exists():
        t0 = time.perf_counter()
        lines = shapes.write_shape(path, shape, size_mib * MIB)
        print(f"  generated {path} ({lines:,} lines) in {time.perf_counter() - t0:.0f} s", flush=True)
    return path


def _row(label: str, r: dict[str, Any]) -> str:
    mb = r["bytes"] / 1e6
    return (f"  {label:<28} {r['examples']:>11,} ex  {r['wall']:6.1f} s {mb / r['wall']:6.1f} MB/s  cpu "
            f"{r['cpu']:6.1f} s  peak {r['peak'] / MIB:5.0f} MiB")


def _median_run(runs: list[dict[str, Any]], sampled: dict[str, Any]) -> dict[str, Any]:
    """The timed run of median wall time (the lower middle one of an even number), with the sampled run's peak."""
    middle = sorted(runs, key=lambda r: r["wall"])[(len(runs) - 1) // 2]
    return {**middle, "peak": sampled["peak"]}


def _spread(runs: list[dict[str, Any]]) -> str:
    walls = sorted(r["wall"] for r in runs)
    return f"{walls[0]:.1f}-{walls[-1]:.1f} s over {len(walls)} runs" if len(walls) > 1 else "1 run"


def _times(ratio: float, better: str, worse: str) -> str:
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


def _beside(shape: str, path: Path, repeat: int, workers: int | None) -> int:
    """ftops and the baseline, run after run in turn (a machine that slows down slows both), each run a fresh
    process, timed with nothing sampling it; then each once more for its peak memory. The median run of each,
    their ratio, and the ratio of each pair of runs. Returns ftops' peak."""
    ours: list[dict[str, Any]] = []
    base: list[dict[str, Any]] = []
    for _ in range(repeat):
        ours.append(_run_child("ftops", path, workers, sampled=False))
        base.append(_run_child("cookbook", path, None, sampled=False))
    o = _median_run(ours, _run_child("ftops", path, workers))
    b = _median_run(base, _run_child("cookbook", path, None))
    print(_row(f"{shape} ftops", o) + f"  ({_spread(ours)})")
    print(_row(f"{shape} cookbook-style", b) + f"  ({_spread(base)})")
    pairs = sorted(y["wall"] / x["wall"] for x, y in zip(ours, base, strict=True))
    each = f"; run by run {pairs[0]:.1f}-{pairs[-1]:.1f}x" if len(pairs) > 1 else ""
    print(f"  {shape} ratio                  {_times(b['wall'] / o['wall'], 'faster', 'slower')} (wall, medians"
          f"{each}), {_times(b['cpu'] / o['cpu'], 'less', 'more')} cpu, "
          f"{_times(b['peak'] / max(o['peak'], 1), 'less', 'more')} memory", flush=True)
    return int(o["peak"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.validation", description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the generated files are kept")
    parser.add_argument("--size-mib", type=int, default=128, help="size of each speed shape's file")
    parser.add_argument("--memory-size-mib", type=int, default=480, help="size of the memory shapes' files")
    parser.add_argument("--shapes", default=",".join(shapes.SPEED_SHAPES))
    parser.add_argument("--format-shapes", default=",".join(shapes.FORMAT_SHAPES))
    parser.add_argument("--memory-shapes", default=",".join(MEMORY_RUNS))
    parser.add_argument("--repeat", type=int, default=3, help="runs of ftops and of the baseline per speed shape")
    parser.add_argument("--workers", type=int, default=None, help="validator processes (default: 1)")
    parser.add_argument("--one", choices=("ftops", "cookbook"), help=argparse.SUPPRESS)
    parser.add_argument("--path", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--not-sampled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        print(json.dumps(_measure(args.one, args.path, args.workers, sampled=not args.not_sampled)))
        return 0
    print(f"load          {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f} "
          f"(1/5/15 min) on {os.cpu_count()} cores", flush=True)
    worst = 0
    print(f"speed: ftops beside the cookbook-style baseline (benchmarks/cookbook.py), {args.size_mib} MiB per shape")
    for shape in filter(None, args.shapes.split(",")):
        worst = max(worst, _beside(shape, _ensure(args.dir, shape, args.size_mib), max(1, args.repeat), args.workers))
    if args.format_shapes:
        print(f"formats: DPO and reinforcement examples beside the baseline once, {args.size_mib} MiB each (the "
              "general path checks them)")
    for shape in filter(None, args.format_shapes.split(",")):
        worst = max(worst, _beside(shape, _ensure(args.dir, shape, args.size_mib), 1, args.workers))
    print(f"memory: ftops on files of every shape, {args.memory_size_mib} MiB unless named; long examples and "
          "the odd lines' files beside the baseline too")
    for name in filter(None, args.memory_shapes.split(",")):
        shape, size_mib = MEMORY_RUNS.get(name, (name, None))
        path = _ensure(args.dir, shape, size_mib or args.memory_size_mib)
        label = f"{shape} {path.stat().st_size / MIB:.0f} MiB"
        if name in BESIDE:
            worst = max(worst, _beside(label, path, 1, args.workers))
            continue
        ours = _run_child("ftops", path, args.workers)
        worst = max(worst, ours["peak"])
        print(_row(label, ours), flush=True)
    print(f"peak memory   {worst / MIB:.0f} MiB at most over every shape (PSS of the whole process tree; "
          f"target <= 256 MiB)")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
