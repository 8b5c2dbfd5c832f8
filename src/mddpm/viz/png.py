"""Figures as PNG bytes, and PNG bytes as an inline ``<img>`` (a data URI: the report fetches nothing)."""

from __future__ import annotations

import base64
import html
import io

from matplotlib.figure import Figure


def png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """The figure as PNG bytes (no software tag: the same figure gives the same bytes)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return buf.getvalue()


def img_tag(png: bytes, alt: str) -> str:
    """An ``<img>`` holding ``png`` inline."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{html.escape(alt)}">'
