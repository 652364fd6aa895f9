"""Cold start: `import function_app` of ftops against the minimal app with the same bindings (benchmarks/minimal_app).

    python -m benchmarks.coldstart [--runs N]

Each import runs in a fresh interpreter (what a new worker pays before the host can index the functions),
alternating the two apps, and the median of N runs of each is printed with their ratio (target <= 1.2x).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MINIMAL = Path(__file__).resolve().parent / "minimal_app"
_TIMED = ("import time; t0 = time.perf_counter(); import function_app; "
          "print(time.perf_counter() - t0)")


def import_seconds(app_dir: Path) -> float:
    env = {k: v for k, v in os.environ.items() if k != "APPLICATIONINSIGHTS_CONNECTION_STRING"}
    env["PYTHONPATH"] = str(app_dir)
    out = subprocess.run([sys.executable, "-c", _TIMED], cwd=app_dir, env=env, check=True, capture_output=True,
                         text=True).stdout
    return float(out.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.coldstart", description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args(argv)
    import_seconds(ROOT), import_seconds(MINIMAL)   # warm the OS file cache for both
    ours, minimal = [], []
    for _ in range(args.runs):
        ours.append(import_seconds(ROOT))
        minimal.append(import_seconds(MINIMAL))
    a, b = statistics.median(ours), statistics.median(minimal)
    print(f"load          {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1/5/15 min)")
    print(f"ftops         import function_app {a * 1000:.0f} ms (median of {args.runs}; "
          f"min {min(ours) * 1000:.0f})")
    print(f"minimal app   import function_app {b * 1000:.0f} ms (same bindings, empty functions; "
          f"min {min(minimal) * 1000:.0f})")
    print(f"ratio         {a / b:.2f}x (target <= 1.2x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
