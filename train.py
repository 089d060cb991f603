#!/usr/bin/env python3
"""Train, resume, clean, sample and export: see `python train.py --help`."""

import sys

from gan.cli import main

if __name__ == "__main__":
    sys.exit(main())
