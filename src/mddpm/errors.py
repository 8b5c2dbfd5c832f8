"""The one error type the command line turns into a one-line message and exit code 2, and the interrupt
SIGTERM becomes (exit code 143)."""


def one_line(message: str) -> str:
    """``message`` with line breaks (inside a path, say) shown as ``\\n`` and ``\\r``: a message stays one line."""
    return message.replace("\n", "\\n").replace("\r", "\\r")


class MddpmError(Exception):
    """A problem with the user's input or environment.

    The message names the file (or setting) and the problem on one line, e.g.
    ``"data/images/a.nii.gz: not a 3-D image (shape (4, 4))"``.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (:func:`mddpm.parallel.sigterm_raises`): handled wherever Ctrl-C
    is, so clean-up runs; exit code 143 at the command line."""
