"""Entry point for `ray job submit --working-dir . -- python jobs/pretrain.py --config configs/<name>.yaml`
(same flags as `momu pretrain`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["pretrain", *sys.argv[1:]]))
