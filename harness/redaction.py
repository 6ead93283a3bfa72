"""Redaction: every secret the harness holds (auth header values, secret env_var values,
the sandbox database's password), and what a secret commonly becomes on its way back (its
base64, URL and hex encodings, the value without its `Bearer ` scheme, any of these
reversed), is replaced by *** in whatever is shown to the agent or recorded."""

from __future__ import annotations

import base64
import re
import urllib.parse
from typing import Any

REDACTED = "***"
_MIN_SECRET = 4
"""Shorter values are not treated as secrets, or every `a` would vanish."""
_MIN_FRAGMENT = 8
"""An encoding of part of a secret is redacted only when at least this long (shorter ones
would match ordinary text)."""
_AUTH_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9._~+-]*\s+(\S.*)$")


class Redactor:
    """Replaces every known secret, in any form `forms` lists, wherever it appears in a
    string (also inside dicts and lists), by ***."""

    def __init__(self, values: list[str] | None = None) -> None:
        self._values: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        for value in values or []:
            self.add(value)

    def add(self, value: str) -> None:
        """Treat `value` (and what it becomes) as a secret from now on."""
        if value and len(value) >= _MIN_SECRET and value not in self._values:
            self._values.add(value)
            exact: set[str] = set()
            folded: set[str] = set()
            for secret in self._values:
                case_sensitive, case_insensitive = forms(secret)
                exact |= case_sensitive
                folded |= case_insensitive
            alternatives = sorted(exact, key=len, reverse=True)
            insensitive = sorted(folded - exact, key=len, reverse=True)
            self._pattern = re.compile("|".join(
                [re.escape(a) for a in alternatives]
                + [f"(?i:{re.escape(a)})" for a in insensitive]))

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


def forms(secret: str) -> tuple[set[str], set[str]]:
    """The strings redacted for `secret`: (matched exactly, matched in any case)."""
    bare = {secret}
    scheme = _AUTH_SCHEME.match(secret)
    if scheme and len(scheme.group(1)) >= _MIN_SECRET:
        bare.add(scheme.group(1))
        if secret.lower().startswith("basic "):
            bare |= _basic_credentials(scheme.group(1))
    exact: set[str] = set()
    folded: set[str] = set()
    for value in bare:
        data = value.encode()
        exact.add(value)
        exact |= _base64_forms(data)
        folded |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
                   urllib.parse.quote(value), data.hex()}
    exact |= {s[::-1] for s in exact}
    folded |= {s[::-1] for s in folded}
    return ({s for s in exact if len(s) >= _MIN_SECRET},
            {s for s in folded if len(s) >= _MIN_SECRET})


def _basic_credentials(token: str) -> set[str]:
    """`user:password` and the password of a Basic credential, when it decodes as one."""
    try:
        pair = base64.b64decode(token, validate=True).decode()
    except ValueError:
        return set()
    password = pair.partition(":")[2]
    return {pair} | ({password} if len(password) >= _MIN_SECRET else set())


def _base64_forms(data: bytes) -> set[str]:
    """The whole value's encoding (padded and not, standard and URL-safe alphabets) and,
    for a value embedded in longer encoded text, the run of characters that depends only on
    the value at each of the three alignments it can have."""
    found: set[str] = set()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        whole = encode(data).decode()
        found |= {whole, whole.rstrip("=")}
        for skip in range(3):
            aligned = data[skip:]
            core = encode(aligned[:len(aligned) // 3 * 3]).decode()
            if len(core) >= _MIN_FRAGMENT:
                found.add(core)
    return found
