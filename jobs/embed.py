"""Entry point for `ray job submit --working-dir . -- python jobs/embed.py --config configs/embed_moleculenet.yaml`
(same flags as `momu embed`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
