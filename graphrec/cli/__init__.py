"""The ``graphrec`` command line."""
