"""Runs several benchmarks in one go, e.g. `python benchmarks/run.py all --smoke --out DIR`.

One benchmark: `python benchmarks/<name>.py [flags]` (same flags); see
`benchmarks/harness/__init__.py` for the list and `--help` for the flags.
"""

import sys

from harness import main

if __name__ == "__main__":
    sys.exit(main())
