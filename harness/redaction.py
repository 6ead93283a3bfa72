"""Redaction: every secret the harness holds (auth header values, secret env_var values,
the sandbox database's password), and what a secret commonly becomes on its way back, is
replaced by *** in whatever is shown to the agent or recorded.

What a secret becomes: the value without its `Bearer `/`Basic ` scheme (and a Basic
credential's decoded `user:password`), each of these reversed, and of every one of them
its base64 (standard and URL-safe alphabets, padded or not, wrapped across lines, and
inside longer base64 text at any alignment: the characters that carry any bit of the
value), its percent-encoding (any character encoded or not, in any case, `+` for space),
and its hex (any case, bytes separated by spaces, colons or line breaks, or not), each
also reversed."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

REDACTED = "***"
MIN_SECRET = 4
"""Shorter values are not treated as secrets, or every `a` would vanish."""
_AUTH_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9._~+-]*\s+(\S.*)$")
_WRAP = r"(?:\r?\n)?"
"""Between two characters of base64: a line break, as `base64` makes every 76."""
_HEX_GAP = r"[ \t:]*(?:\r?\n[ \t]*)?"
"""Between two bytes of hex: spaces, colons, a line break (od, xxd -p, basenc)."""


class Redactor:
    """Replaces every known secret, in any form it commonly takes, wherever it appears in a
    string (also inside dicts, lists and tuples), by ***."""

    def __init__(self, values: list[str] | None = None) -> None:
        self._values: list[str] = []
        self._pattern: re.Pattern[str] | None = None
        for value in values or []:
            self.add(value)

    def add(self, value: str) -> None:
        """Treat `value` (and what it becomes) as a secret from now on."""
        if not value or len(value) < MIN_SECRET or value in self._values:
            return
        self._values.append(value)
        fragments = {fragment for secret in self._values for fragment in patterns(secret)}
        self._pattern = re.compile("|".join(sorted(fragments, key=len, reverse=True)))

    def finds(self, text: str) -> bool:
        """Whether `text` holds a secret in any of its forms."""
        return self._pattern is not None and self._pattern.search(text) is not None

    def __call__(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._pattern.sub(REDACTED, value) if self._pattern is not None else value
        if isinstance(value, dict):
            return {k: self(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self(v) for v in value]
        return value


def patterns(secret: str) -> list[str]:
    """Regular expressions that match `secret` in every form this module covers."""
    found: list[str] = []
    for value in bare_forms(secret):
        data = value.encode()
        # The percent pattern matches the value itself too (any character may stand as is).
        found += [_percent(value), _percent(value, reverse=True)]
        # (The reversed value is one of the bare forms: its hex is the bytes read backwards.)
        found.append(_HEX_GAP.join(f"(?i:{byte:02x})" for byte in data))
        found.append(f"(?i:{re.escape(data.hex()[::-1])})")
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            for skip in range(3):
                window = _base64_window(data, skip, encode)
                found.append(_WRAP.join(_klass(chars) for chars in window))
                found.append(_WRAP.join(_klass(chars) for chars in reversed(window)))
    return [p for p in dict.fromkeys(found) if p]


def bare_forms(secret: str) -> list[str]:
    """The secret, without its auth scheme, a Basic credential decoded; each reversed."""
    bare = [secret]
    scheme = _AUTH_SCHEME.match(secret)
    if scheme and len(scheme.group(1)) >= MIN_SECRET:
        bare.append(scheme.group(1))
        if secret.lower().startswith("basic "):
            bare += _basic_credentials(scheme.group(1))
    bare += [value[::-1] for value in bare]
    return [value for value in dict.fromkeys(bare) if len(value) >= MIN_SECRET]


def _basic_credentials(token: str) -> list[str]:
    """`user:password` and the password of a Basic credential, when it decodes as one."""
    try:
        pair = base64.b64decode(token, validate=True).decode()
    except ValueError:
        return []
    password = pair.partition(":")[2]
    return [pair, password]


def _percent(value: str, *, reverse: bool = False) -> str:
    """Each character as itself or percent-encoded (any case; a space also as `+`); with
    `reverse`, the encoded text read backwards."""
    parts = []
    for character in value:
        data = character.encode()
        escapes = [f"(?i:{f'{byte:02x}'[::-1]})%" for byte in reversed(data)] if reverse \
            else [f"%(?i:{byte:02x})" for byte in data]
        options = [re.escape(character), "".join(escapes)] + (["\\+"] if character == " "
                                                              else [])
        parts.append(f"(?:{'|'.join(options)})")
    return "".join(reversed(parts) if reverse else parts)


def _base64_window(data: bytes, skip: int, encode: Callable[[bytes], bytes]
                   ) -> list[set[str]]:
    """For `data` inside longer base64 text, preceded by a number of bytes that leaves it
    `skip` bytes into a 3-byte group: the characters, in order, that carry any of its bits,
    each as the set of characters it can be (it shares bits with unknown neighbours)."""
    start = skip * 8 // 6
    end = -(-(skip + len(data)) * 8 // 6)
    seen: list[set[str]] = [set() for _ in range(end - start)]
    for neighbour in range(256):
        before = bytes([neighbour]) * skip
        for message in (before + data + b"\0\0", bytes(skip) + data + bytes([neighbour, 0])):
            text = encode(message).decode()
            for index, chars in enumerate(seen):
                chars.add(text[start + index])
    return seen


def _klass(chars: set[str]) -> str:
    return "[" + "".join(re.escape(c) for c in sorted(chars)) + "]"
