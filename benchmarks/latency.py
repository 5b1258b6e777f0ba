"""Latency benchmark: `python benchmarks/latency.py --help` (the same code as `gprune bench`)."""

import sys

from gprune.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
