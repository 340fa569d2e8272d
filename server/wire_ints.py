"""Integers as HTTP headers and the wire formats spell them: ASCII decimal digits only.

`str.isdigit()` is true for superscripts and other scripts' digits ("²", "١"),
some of which `int()` then rejects (a 500 where a 400 was due) and some of which
it accepts, along with "1_000" and surrounding spaces: neither is what a client
meant. Every integer read from a header or a string parameter goes through here.
"""

from __future__ import annotations

import re

#: Longest accepted digit string: no header or parameter needs a number above 10**18.
MAX_DIGITS = 18
_DIGITS = re.compile(rf"[0-9]{{1,{MAX_DIGITS}}}")


def parse_wire_int(text: str) -> int | None:
    """`text` (surrounding spaces allowed) as a non-negative integer, or None if it is not
    1 to 18 ASCII digits."""
    stripped = text.strip(" \t")
    if _DIGITS.fullmatch(stripped) is None:
        return None
    return int(stripped)
