"""Effort benchmark: ``python benchmarks/efficiency.py [--model geometric] [--logs state/heldout_logs]``.

Same as ``labeler bench efficiency``; writes benchmarks/results/efficiency.{md,json,png} by default.
"""

import sys

from labeler.refine.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--out" not in argv:
        argv += ["--out", "benchmarks/results"]
    sys.exit(main(["bench", "efficiency", *argv]))
