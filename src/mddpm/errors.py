"""The error type the command line turns into a one-line message and exit code 2 (:class:`MddpmError` and
its subclasses, for callers that branch on the kind of problem), and the interrupt SIGTERM becomes (exit
code 143)."""


def one_line(message: str) -> str:
    """``message`` with line breaks (inside a path, say) shown as ``\\n`` and ``\\r``: a message stays one line."""
    return message.replace("\n", "\\n").replace("\r", "\\r")


class MddpmError(Exception):
    """A problem with the user's input or environment.

    The message names the file (or setting) and the problem on one line, e.g.
    ``"data/images/a.nii.gz: not a 3-D image (shape (4, 4))"``. The subclasses below say which kind of
    problem it is where a caller may act on it; anything else is a plain :class:`MddpmError`.
    """


class InputError(MddpmError):
    """Input data that cannot be used: a scan, mask or array of the wrong shape, grid or values, a
    malformed dataset.json."""


class NotFoundError(MddpmError):
    """A run, weights, threshold, dataset or other file that does not exist where it was named."""


class ConfigError(MddpmError):
    """A bad setting: an unknown method, preset, config key or logger, a value of the wrong type or range."""


class DiskFull(MddpmError):
    """No space left on the device of an output: ``"no space left on device while writing PATH (needs about
    N MB)"``."""

    def __init__(self, path, needed_bytes: int | None = None):
        need = f" (needs about {max(1, round(needed_bytes / 2**20))} MB)" if needed_bytes else ""
        super().__init__(f"no space left on device while writing {path}{need}")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread (:func:`mddpm.parallel.sigterm_raises`): handled wherever Ctrl-C
    is, so clean-up runs; exit code 143 at the command line."""
