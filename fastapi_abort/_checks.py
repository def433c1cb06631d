"""What counts as a number of seconds or a count, for every check of a user's value.

``True`` is an ``int`` to Python, and ``sleep(True)`` is a mistake, never one second: every check
of the package goes through these two, so none of them forgets it.
"""

from __future__ import annotations

import math
from typing import TypeGuard

BAD_SECONDS = "{what}() needs a number of seconds that is >= 0 (inf: no limit), got {seconds!r}"


def is_seconds(value: object, *, zero: bool = True, inf: bool = False) -> TypeGuard[float]:
    """Whether ``value`` is a number of seconds: an int or float, not a bool, and not NaN;
    ``>= 0`` (``> 0`` when not ``zero``), and finite unless ``inf``."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if not value >= 0 or (value == 0 and not zero):  # `not >= 0`: NaN fails too
        return False
    return inf or value < math.inf


def is_count(value: object, *, low: int = 0) -> TypeGuard[int]:
    """Whether ``value`` is an int (not a bool) that is ``>= low``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def check_seconds(what: str, seconds: object) -> None:
    """Raise ``ValueError`` (:data:`BAD_SECONDS`) unless ``seconds`` is a number of seconds
    ``>= 0``, infinity included, for the token's method ``what``."""
    if not is_seconds(seconds, inf=True):
        raise ValueError(BAD_SECONDS.format(what=what, seconds=seconds))
