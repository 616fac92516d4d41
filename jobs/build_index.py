"""Entry point for `python jobs/build_index.py --config configs/index_moleculenet.yaml` (same flags as
`momu index build`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["index", "build", *sys.argv[1:]]))
