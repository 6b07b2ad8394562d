"""The base of every error a user can fix (a config key, a file, a folder in use).

The command line prints such an error's message as one line with exit status 2, and shows the
traceback only with `--debug`; any other exception is a bug and keeps its traceback.
"""
import difflib


class UserError(Exception):
    """Raised with a message that names the key, file or folder at fault and the fix."""


class ConfigError(UserError, ValueError):
    """A config that cannot be used; the message names the offending key."""


def did_you_mean(word: str, known) -> str:
    """' (did you mean 'x'?)' for the closest known word, else ''."""
    close = difflib.get_close_matches(word, list(known), n=1) if isinstance(word, str) else []
    return f" (did you mean '{close[0]}'?)" if close else ""
