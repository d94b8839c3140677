"""The one exception type for mistakes a user can fix; the entry points print its message and exit 2."""

from __future__ import annotations


class UserError(ValueError):
    """Bad input (a ``ValueError``): the message names what was wrong and what to do about it."""
