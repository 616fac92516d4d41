"""Entry point for `ray job submit --working-dir . -- python jobs/predict_property.py MODEL INPUT OUTPUT`
(same flags as `momu predict property`)."""

import sys

from momu.cli import main

if __name__ == "__main__":
    sys.exit(main(["predict", "property", *sys.argv[1:]]))
