"""Progress bars: one rich style for every step that can take more than a few seconds.

Bars are drawn on stderr, and only when stdout and stderr are both terminals, so that logs and pipes
(CI) stay free of them; every command that draws one has ``--no-progress``.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")


def shows_progress(requested: bool = True) -> bool:
    """Whether to draw progress: asked for, and stdout and stderr are terminals."""
    return requested and sys.stdout.isatty() and sys.stderr.isatty()


@contextmanager
def progress_bar(description: str, total: int | None, enabled: bool = True,
                 label: str = "") -> Iterator[Callable[..., None]]:
    """Yields ``advance(label="")``: one of ``total`` steps done; ``label`` (e.g. the case id, or the step
    that starts now) is shown after the bar."""
    if not shows_progress(enabled):
        yield lambda label="": None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn(), TextColumn("{task.fields[label]}"))
    with Progress(*columns, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=total, label=label)
        yield lambda label="": bar.update(task, advance=1, label=label)


def track(items: Iterable[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate ``items`` under a progress bar."""
    items = list(items)
    with progress_bar(description, len(items), enabled) as advance:
        for item in items:
            yield item
            advance()


def training_progress_bar():
    """Lightning's rich training bar, in the colours of the bars above and on stderr like them."""
    from lightning.pytorch.callbacks import RichProgressBar
    from lightning.pytorch.callbacks.progress.rich_progress import RichProgressBarTheme

    theme = RichProgressBarTheme(progress_bar="bar.complete", progress_bar_finished="bar.finished",
                                 progress_bar_pulse="bar.pulse")
    return RichProgressBar(refresh_rate=10, theme=theme, console_kwargs={"stderr": True})
