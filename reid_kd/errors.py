"""The base of every error a user can fix (a config key, a file, a folder in use).

The command line prints such an error's message as one line with exit status 2, and shows the
traceback only with `--debug`; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Raised with a message that names the key, file or folder at fault and the fix."""
