"""Looking for a secret, in the forms harness claims to redact, in what it showed or wrote."""

from __future__ import annotations

import base64
import re
import urllib.parse

from harness.redaction import MIN_SECRET, bare_forms

_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


def forms(secret: str) -> tuple[set[str], set[str]]:
    """Literal texts a secret becomes (matched exactly, matched in any case): examples of
    what `patterns` matches, for tests and for scanning what was written."""
    exact: set[str] = set()
    folded: set[str] = set()
    for value in bare_forms(secret):
        data = value.encode()
        exact.add(value)
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            whole = encode(data).decode()
            exact |= {whole, whole.rstrip("=")}
        folded |= {urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
                   urllib.parse.quote(value), data.hex()}
    exact |= {s[::-1] for s in exact}
    folded |= {s[::-1] for s in folded}
    return ({s for s in exact if len(s) >= MIN_SECRET},
            {s for s in folded if len(s) >= MIN_SECRET})


def variants(secret: str) -> set[str]:
    """Texts that hold `secret`: its exact forms, and its encodings in either letter case
    (hex wholly, percent-escapes each)."""
    exact, folded = forms(secret)
    found = set(exact)
    for form in folded:
        found |= {form, form.lower(), form.upper(),
                  _ESCAPE.sub(lambda m: m.group().lower(), form),
                  _ESCAPE.sub(lambda m: m.group().upper(), form)}
    return found


def leaks(secrets: list[str], texts: dict[str, str]) -> list[tuple[str, str]]:
    """(where, form) for every form of every secret found in the named texts."""
    every = {form for secret in secrets for form in variants(secret)}
    return [(where, form) for where, text in texts.items() for form in every if form in text]
