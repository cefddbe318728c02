"""Whole-model RTL benchmark: see vitforge.sw.benchmark (python scripts/bench_rtl.py --help)."""

import sys

from vitforge.sw.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
