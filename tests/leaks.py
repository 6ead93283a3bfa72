"""Looking for a secret, in the forms harness claims to redact, in what it showed or wrote."""

from __future__ import annotations

import re

from harness.redaction import forms

_ESCAPE = re.compile(r"%[0-9a-fA-F]{2}")


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
