"""Rendering results: Table 1 as Markdown/CSV/JSON files and the self-contained HTML report."""
