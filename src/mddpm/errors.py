"""The error type the command line turns into a one-line message and exit code 2 (:class:`MddpmError` and
its subclasses, for callers that branch on the kind of problem), and the interrupt SIGTERM becomes (exit
code 143)."""

import re

# SimpleITK's messages open with the C++ source line that threw and prefix the reason with the filter's address
_SITK_LOCATION = re.compile(r"^Exception thrown in SimpleITK \S+: .*:\d+:$")
_SITK_PREFIX = re.compile(r"^(sitk::ERROR: |ITK ERROR: \w+\(0x[0-9a-fA-F]+\): )")


def first_line(e: BaseException) -> str:
    """``"Type: the message's first meaningful line"`` (at most 160 characters) of a library's exception:
    SimpleITK's C++ source location and prefixes left out, so that the reason shows."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not _SITK_LOCATION.match(ln.strip())]
    text = _SITK_PREFIX.sub("", lines[0]) if lines else ""
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


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
