"""Pictures: synthetic-data previews, per-case evaluation figures and the HTML report."""
