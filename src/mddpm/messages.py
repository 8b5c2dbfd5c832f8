"""The library's one output channel: every message goes through the ``mddpm`` logger (stdlib ``logging``).

Three kinds: :func:`say` (what a command did, e.g. "predicted 16 volumes ..."; stdout), :func:`note` (an
aside, e.g. a cache rebuilt; stderr) and :func:`warn` (something the user should act on; stderr). The
console handler looks the streams up when it writes, so redirections (and pytest's capture) see every
message. Silence the library with ``logging.getLogger("mddpm").setLevel(logging.WARNING)``, or route it
elsewhere by replacing the handler. Progress bars are :mod:`mddpm.progress`; errors are exceptions.
"""

from __future__ import annotations

import logging
import sys

NOTE = 25  # between INFO (say) and WARNING
logging.addLevelName(NOTE, "NOTE")
LOGGER = logging.getLogger("mddpm")


class _Console(logging.Handler):
    """The message alone, on stdout (say) or stderr (note, warn), flushed."""

    def emit(self, record: logging.LogRecord) -> None:
        stream = sys.stdout if record.levelno < NOTE else sys.stderr
        try:
            print(self.format(record), file=stream, flush=True)
        except Exception:  # noqa: BLE001 - logging's contract: a failing handler never raises
            self.handleError(record)


if not LOGGER.handlers:
    LOGGER.addHandler(_Console())
    LOGGER.setLevel(logging.INFO)
    LOGGER.propagate = False


def say(message: str) -> None:
    """What a command did (stdout)."""
    LOGGER.info(message)


def note(message: str) -> None:
    """An aside the user may want to know (stderr)."""
    LOGGER.log(NOTE, message)


def warn(message: str) -> None:
    """Something the user should act on (stderr)."""
    LOGGER.warning(message)
