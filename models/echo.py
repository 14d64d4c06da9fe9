"""User values as error messages and logs quote them: short, however long the value sent.

A request may carry a 4,000-digit number or a megabyte of key; an error that names it must stay readable and
must not copy the whole value into the log and the job's stored error.
"""
from __future__ import annotations

from typing import Any

MAX_DIGITS = 20  # digits of an integer quoted whole; longer ones keep these many, then "…"
MAX_CHARS = 64  # characters of a string quoted whole
MAX_MESSAGE = 500  # characters of a whole error message (its tail is cut)


def short(value: Any) -> str:
    """`value` as a message quotes it: integers past MAX_DIGITS digits and strings past MAX_CHARS characters
    are cut, with "…" and the full length; strings are quoted as repr() quotes them."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return _short_int(value)
    if isinstance(value, str):
        if len(value) <= MAX_CHARS:
            return repr(value)
        return f"{value[:MAX_CHARS]!r}… ({len(value)} characters)"
    return clip(repr(value), MAX_CHARS)


def clip(message: str, limit: int = MAX_MESSAGE) -> str:
    """`message` cut to at most `limit` characters (plus "…"), numbers within it shortened as short() does."""
    out, digits = [], 0
    for ch in message:  # runs of digits longer than MAX_DIGITS keep their first MAX_DIGITS
        if ch.isdigit():
            digits += 1
            if digits == MAX_DIGITS + 1:
                out.append("…")
            if digits > MAX_DIGITS:
                continue
        else:
            digits = 0
        out.append(ch)
        if len(out) >= limit:
            out.append("…")
            break
    return "".join(out)


def _short_int(value: int) -> str:
    sign = "-" if value < 0 else ""
    try:
        digits = str(abs(value))
    except ValueError:  # past sys.get_int_max_str_digits(): Python refuses to write it out at all
        return f"{sign}an integer of about {int(abs(value).bit_length() * 0.30103)} digits"
    if len(digits) <= MAX_DIGITS:
        return sign + digits
    return f"{sign}{digits[:MAX_DIGITS]}… ({len(digits)} digits)"
