"""Voucher codes: unguessable, easy to read aloud or type, and a typo is caught before any lookup.

A code is 12 random symbols of Crockford's base32 (60 bits from `secrets`: guessing one of a million live
codes takes ~10^12 tries, and every try is logged) plus one Luhn mod 32 check symbol, which catches every
single wrong symbol and nearly every swap of two neighbours. Shown as ``XXXX-XXXX-XXXX-C``; input is
normalised the Crockford way (case, dashes and spaces ignored; O→0, I/L→1). Pure functions, no I/O.
"""

from __future__ import annotations

import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"  # Crockford: no I, L, O, U
BODY_LENGTH = 12
_INDEX = {symbol: value for value, symbol in enumerate(ALPHABET)}
_ALIASES = str.maketrans({"O": "0", "I": "1", "L": "1"})


def _luhn_sum(symbols: str, *, double_first: bool) -> int:
    n = len(ALPHABET)
    total = 0
    double = double_first
    for symbol in reversed(symbols):
        addend = _INDEX[symbol] * (2 if double else 1)
        total += addend // n + addend % n
        double = not double
    return total


def check_symbol(body: str) -> str:
    """The Luhn mod 32 check symbol for `body` (already normalised)."""
    n = len(ALPHABET)
    return ALPHABET[(n - _luhn_sum(body, double_first=True) % n) % n]


def new_code() -> str:
    """A fresh normalised code (13 symbols, no separators)."""
    # One read of the OS's randomness per code, each byte's low five bits a symbol (uniform: 256 is a
    # multiple of 32). secrets.choice per symbol read it 24 times a code: 17 % of a batched redemption.
    body = "".join(ALPHABET[byte & 31] for byte in secrets.token_bytes(BODY_LENGTH))
    return body + check_symbol(body)


def normalise(typed: str) -> str | None:
    """The canonical form of what a merchant typed, or None when it cannot be a voucher code."""
    code = "".join(typed.split()).replace("-", "").upper().translate(_ALIASES)
    if len(code) != BODY_LENGTH + 1 or any(symbol not in _INDEX for symbol in code):
        return None
    if _luhn_sum(code, double_first=False) % len(ALPHABET) != 0:
        return None
    return code


def display(code: str) -> str:
    """``ABCD-EFGH-JKMN-P`` for printing and reading aloud."""
    return "-".join(code[i : i + 4] for i in range(0, len(code), 4))
