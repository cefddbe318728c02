"""Whole-model RTL benchmark: see vitforge.sim.benchmark (python scripts/bench_rtl.py --help)."""

import sys

from vitforge.sim.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
