"""Entry point for `ray job submit --working-dir . -- python jobs/property_sweep.py --config configs/<name>.yaml`
(same flags as `momu finetune property-sweep`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", "property-sweep", *sys.argv[1:]]))
