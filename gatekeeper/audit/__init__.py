"""``gk audit``: review, search, prove and export what the log recorded. See ``docs/audit.md``."""
