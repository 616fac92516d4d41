"""Entry point for `ray job submit --working-dir . -- python jobs/finetune_retrieval.py --config configs/<name>.yaml`
(same flags as `momu finetune retrieval`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", "retrieval", *sys.argv[1:]]))
