"""`make bench`: every benchmark, each printing its own figures. `python -m benchmarks NAME…` runs some."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("validation", "coldstart", "operator_pages", "polling", "keepalive", "evaluation", "quarantine")


def main(names: list[str]) -> int:
    sys.argv = sys.argv[:1]   # each benchmark parses its own options; from here it gets its defaults
    for name in names or BENCHMARKS:
        print(f"== {name} ==", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
