"""Entry point for `ray job submit --working-dir . -- python jobs/finetune_property.py --config configs/<name>.yaml`
(same flags as `momu finetune property`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["finetune", "property", *sys.argv[1:]]))
