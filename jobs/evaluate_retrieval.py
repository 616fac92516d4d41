"""Entry point for `ray job submit --working-dir . -- python jobs/evaluate_retrieval.py --config configs/<name>.yaml`
(same flags as `momu evaluate retrieval`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["evaluate", "retrieval", *sys.argv[1:]]))
