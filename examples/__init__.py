"""Runnable examples for docs/extending.md (import them with ``graphrec --plugin examples.<module>``)."""
