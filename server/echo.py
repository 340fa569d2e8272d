"""Client values quoted in error messages: always short, whatever the client sent.

An error that echoes its input whole lets a client make the server write and send
as much as it likes (a 100 KB model name came back as a 100 KB answer). `echo`
quotes at most `ECHO_CHARS` characters, and builds the quote from a bounded
prefix of the value, so even a 16-million-element list costs nothing to quote.
"""

from __future__ import annotations

import reprlib

#: Longest echo of a client-supplied value inside an error message.
ECHO_CHARS = 60

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = _REPR.maxlong = ECHO_CHARS
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = 8
_REPR.maxlevel = 3


def echo(value: object) -> str:
    """`repr(value)`, cut to ECHO_CHARS characters (with "..." when cut)."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an int too long to print (int_max_str_digits)
        return "<a number too long to print>"
    return text if len(text) <= ECHO_CHARS else text[: ECHO_CHARS - 3] + "..."


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters (with "..." when cut): for whole messages."""
    return text if len(text) <= limit else text[: limit - 3] + "..."
