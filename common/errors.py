"""The one exception type for mistakes a user can fix (a bad flag, a wrong shape, a missing or corrupt file).

Library code raises :class:`UserError` with a message that says what was wrong and what to do; the entry points
(``python -m BNN.train`` and the others) print that message without a traceback and exit with status 2. It is a
``ValueError``, so callers that catch ``ValueError`` keep working.
"""

from __future__ import annotations


class UserError(ValueError):
    """Bad input: the message names what was wrong and what to do about it."""
