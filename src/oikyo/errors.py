"""The one exception type for problems a user can fix (bad input, unknown id, wrong option).

The CLI prints these as a plain message and exits non-zero; the REST API turns them into a 4xx.
Anything else is a bug and keeps its traceback.
"""


class OikyoError(Exception):
    """A problem with the user's input or request; the message says what to do."""
