"""``python -m greencpn`` — the same command line as ``greencpn``."""

from __future__ import annotations

import sys

from greencpn.cli import main

if __name__ == "__main__":
    sys.exit(main())
