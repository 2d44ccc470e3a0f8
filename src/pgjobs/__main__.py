"""Run the `pgjobs` command line: `python -m pgjobs`."""

from __future__ import annotations

import sys

from pgjobs.cli import main

if __name__ == "__main__":
    sys.exit(main())
