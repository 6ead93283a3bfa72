"""Secrets in added lines: common key formats, and long high-entropy tokens."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

FORMATS: list[tuple[str, re.Pattern[str]]] = [
    ("private key", re.compile(r"-----BEGIN (?:RSA |EC |DSA |OPENSSH |PGP |ENCRYPTED )?PRIVATE KEY")),
    ("AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("GitHub token", re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,})")),
    ("GitLab token", re.compile(r"\bglpat-[A-Za-z0-9_-]{20,}")),
    ("Slack token", re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Stripe secret key", re.compile(r"\b[sr]k_live_[0-9A-Za-z]{20,}")),
    ("OpenAI-style API key", re.compile(r"\bsk-(?:proj-)?[A-Za-z0-9_-]{32,}")),
    ("JSON web token", re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}")),
    ("credentials in a URL", re.compile(r"[a-z][a-z0-9+.-]*://[^\s/:@]+:[^\s/@]{6,}@[^\s/]+")),
]
_TOKEN = re.compile(r"[A-Za-z0-9+/_=-]{24,}")
_ASSIGNMENT = re.compile(r"(?i)(secret|token|passw(or)?d|api[_-]?key|credential|private)")


@dataclass(frozen=True)
class SecretFinding:
    """A likely secret on an added line."""

    path: str
    line: int
    kind: str
    excerpt: str


def entropy(text: str) -> float:
    """Shannon entropy in bits per character."""
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def scan_line(path: str, number: int, text: str, *, min_entropy: float) -> list[SecretFinding]:
    """The secrets on one added line."""
    found = []
    for kind, pattern in FORMATS:
        match = pattern.search(text)
        if match:
            found.append(SecretFinding(path, number, kind, _mask(match.group())))
    if found:
        return found
    for match in _TOKEN.finditer(text):
        token = match.group()
        mixed = sum(bool(re.search(p, token)) for p in ("[a-z]", "[A-Z]", "[0-9]")) >= 2
        threshold = min_entropy if _ASSIGNMENT.search(text) else min_entropy + 0.5
        if mixed and not token.startswith(("http", "sha256-", "sha512-")) and \
                entropy(token) >= threshold:
            found.append(SecretFinding(path, number, "high-entropy string", _mask(token)))
            break
    return found


def _mask(secret: str) -> str:
    return secret[:4] + "..." + secret[-2:] if len(secret) > 8 else "***"
