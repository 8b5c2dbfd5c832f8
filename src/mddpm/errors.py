"""The one error type the command line turns into a one-line message and exit code 2."""


def one_line(message: str) -> str:
    """``message`` with line breaks (inside a path, say) shown as ``\\n`` and ``\\r``: a message stays one line."""
    return message.replace("\n", "\\n").replace("\r", "\\r")


class MddpmError(Exception):
    """A problem with the user's input or environment.

    The message names the file (or setting) and the problem on one line, e.g.
    ``"data/images/a.nii.gz: not a 3-D image (shape (4, 4))"``.
    """
