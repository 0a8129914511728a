"""User-facing errors.

Every problem a user can fix (bad files, bad config, unknown names) is raised as a
:class:`GraphrecError` whose message is one line saying what is wrong and how to fix
it. The CLI prints that line and exits with status 2; it never shows a traceback.
"""


class GraphrecError(ValueError):
    """A one-line, user-fixable error (malformed input, unknown name, bad config)."""
