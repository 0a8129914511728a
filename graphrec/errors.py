"""User-facing errors and warnings.

Every problem a user can fix (bad files, bad config, unknown names) is raised as a
:class:`GraphrecError` whose message is one line saying what is wrong and how to fix
it. The CLI prints that line and exits with status 2; it never shows a traceback.
Suspicious but usable input is a :class:`GraphrecWarning` (``warnings.warn``), which the
CLI prints as one ``warning: ...`` line.
"""


class GraphrecError(ValueError):
    """A one-line, user-fixable error (malformed input, unknown name, bad config)."""


class GraphrecWarning(UserWarning):
    """Input that works but is probably not what the user meant (one line, shown by the CLI)."""
