"""A stderr log handler that writes to the *current* ``sys.stderr`` at each record.

A plain ``StreamHandler(sys.stderr)`` keeps the stream it was given; when a caller swaps
``sys.stderr`` (a test's capture, an embedding program) and later closes the old one, every
record becomes a "--- Logging error ---" traceback on the new stderr.
"""

from __future__ import annotations

import logging
import sys
from typing import Any


class StderrHandler(logging.StreamHandler):
    """``logging.StreamHandler`` bound to whatever ``sys.stderr`` is when a record is emitted."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:  # StreamHandler.__init__ / setStream assign it
        pass
