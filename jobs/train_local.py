"""Entry point: `python jobs/train_local.py --config configs/demo.yaml` (same as `momu train-local`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["train-local", *sys.argv[1:]]))
