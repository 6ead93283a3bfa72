"""Secrets on the lines a pull request adds, found by detect-secrets: its provider plugins
(AWS, GitHub, GitLab, Slack, Stripe, private keys, JWTs, credentials in URLs, ...), its
base64 entropy plugin on quoted strings, harness's name rule and filters
(`harness.gate.secret_rules`), and its baseline format for secrets a team has accepted."""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.gate import secret_rules

# Plugins of detect-secrets left out: its keyword plugin flags any quoted word assigned to
# `password` (`login(password="pw")` in every test suite) and is replaced by harness's
# name rule; hex strings are commit hashes, checksums and migration revisions far more
# often than keys (a hex key under a secret's name is found by the name rule); public IP
# addresses are not credentials.
_LEFT_OUT = frozenset({"KeywordDetector", "HexHighEntropyString", "IPPublicDetector"})
_FILTERS = [
    "detect_secrets.filters.allowlist.is_line_allowlisted",
    "detect_secrets.filters.heuristic.is_sequential_string",
    "detect_secrets.filters.heuristic.is_potential_uuid",
    "detect_secrets.filters.heuristic.is_likely_id_string",
    "detect_secrets.filters.heuristic.is_templated_secret",
    "detect_secrets.filters.heuristic.is_prefixed_with_dollar_sign",
    "detect_secrets.filters.heuristic.is_lock_file",
    "detect_secrets.filters.heuristic.is_not_alphanumeric_string",
    "detect_secrets.filters.heuristic.is_swagger_file",
    "harness.gate.secret_rules.is_lockfile",
    "harness.gate.secret_rules.is_placeholder_secret",
    "harness.gate.secret_rules.is_allowed_inline",
    "harness.gate.secret_rules.is_indirect_reference",
    "harness.gate.secret_rules.is_hash_in_url_or_digest",
    "harness.gate.secret_rules.is_encoded_text",
]
_GENERIC = ("Secret Assignment", "Base64 High Entropy String")
"""Kinds listed after the others on a line: a provider's name says more than a secret's
name, and that says more than 'random'."""
_URL_CREDENTIALS = re.compile(r"[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/:@'\"]+:([^\s/@'\"]{3,})@[^\s/'\"]+")


@dataclass(frozen=True)
class SecretFinding:
    """A likely secret on an added line: where, what kind(s) of detector found it, and a
    masked excerpt."""

    path: str
    line: int
    kinds: tuple[str, ...]
    excerpt: str

    @property
    def kind(self) -> str:
        """The kinds, as one label."""
        return ", ".join(self.kinds)


@dataclass(frozen=True)
class SecretsBaseline:
    """Secrets a team accepted, from a detect-secrets baseline (`detect-secrets scan >
    .secrets.baseline`): a secret is allowed in a file when the baseline lists its hash
    there, unless an audit marked it real (`is_secret: true`)."""

    allowed: frozenset[tuple[str, str]] = frozenset()

    @classmethod
    def parse(cls, text: str, source: str) -> SecretsBaseline:
        """Read a baseline's JSON. Raises ValueError naming `source` when it is not one."""
        try:
            results = json.loads(text)["results"]
            return cls(frozenset((path, entry["hashed_secret"])
                                 for path, entries in results.items() for entry in entries
                                 if entry.get("is_secret") is not True))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"{source} is not a detect-secrets baseline ({exc})") from exc

    def allows(self, path: str, secret_hash: str) -> bool:
        """Whether the baseline lists this secret in this file."""
        return (path, secret_hash) in self.allowed


def scan_secrets(files: Mapping[str, str], added: Mapping[str, Collection[int]], *,
                 min_entropy: float, baseline: SecretsBaseline = SecretsBaseline()
                 ) -> list[SecretFinding]:
    """The secrets on the `added` lines (numbers at the head) of `files` (path to content at
    the head), one finding per line, in path and line order. Whole files are scanned (the
    detectors read a YAML file's structure and a line's neighbours); only findings on
    added lines count."""
    found: list[SecretFinding] = []
    with tempfile.TemporaryDirectory(prefix="harness-secrets-") as scratch, \
            _settings(min_entropy):
        from detect_secrets.core.scan import scan_file

        for path in sorted(files):
            lines = set(added.get(path, ()))
            if not lines:
                continue
            if secret_rules.is_lockfile(path):
                found += _lockfile_credentials(path, files[path], lines, baseline)
                continue
            target = Path(scratch) / "tree" / path
            target.parent.mkdir(parents=True, exist_ok=True)
            scanned, numbers = _relevant(path, files[path], lines)
            target.write_text(scanned)
            by_line: dict[int, dict[str, str]] = {}
            text_lines = files[path].splitlines()
            for secret in scan_file(str(target)):
                number = numbers[secret.line_number - 1] \
                    if 0 < secret.line_number <= len(numbers) else 0
                if number not in lines or baseline.allows(path, secret.secret_hash):
                    continue
                by_line.setdefault(number, {}).setdefault(
                    secret.type, _token(text_lines[number - 1], secret.secret_value or ""))
            for number, kinds in sorted(by_line.items()):
                ordered = sorted(kinds, key=lambda kind: (_GENERIC.index(kind) + 1
                                                          if kind in _GENERIC else 0, kind))
                found.append(SecretFinding(path, number, tuple(ordered),
                                           mask(kinds[ordered[0]])))
    return found


_STRUCTURED = (".yaml", ".yml", ".ini", ".cfg", ".conf", ".properties", ".toml")
"""Files detect-secrets parses as a whole (a YAML value's key may be lines above it)."""


def _relevant(path: str, text: str, lines: set[int]) -> tuple[str, list[int]]:
    """What of `text` the detectors need, and the line number in `text` of each of its
    lines: the added lines and the line before each (an allow comment for the next
    line); a structured file whole. Every line costs each plugin a call, blank or not."""
    if path.endswith(_STRUCTURED):
        return text, list(range(1, text.count("\n") + 2))
    kept = [(number, line) for number, line in enumerate(text.split("\n"), start=1)
            if number in lines or number + 1 in lines]
    return "\n".join(line for _, line in kept) + "\n", [number for number, _ in kept]


def _lockfile_credentials(path: str, text: str, lines: set[int], baseline: SecretsBaseline
                          ) -> list[SecretFinding]:
    """A lockfile's only likely secret: a registry URL with a password in it."""
    from detect_secrets.core.potential_secret import PotentialSecret

    found = []
    for number, line in enumerate(text.splitlines(), start=1):
        match = _URL_CREDENTIALS.search(line) if number in lines else None
        if match and not secret_rules.is_placeholder(match.group(1)) and not baseline.allows(
                path, PotentialSecret.hash_secret(match.group(1))):
            found.append(SecretFinding(path, number, ("Basic Auth Credentials",),
                                       mask(match.group(1))))
    return found


def _token(line: str, secret: str) -> str:
    """The whole token a detector matched part of (a GitHub plugin reports only `ghp`)."""
    return secret if len(secret) >= 8 else secret_rules.token_around(line, secret)


def mask(secret: str) -> str:
    """A secret shown without giving it away."""
    return secret[:4] + "..." + secret[-2:] if len(secret) > 8 else "***"


@contextmanager
def _settings(min_entropy: float) -> Iterator[Any]:
    """detect-secrets configured with harness's plugins and filters, for this scan only."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.settings import transient_settings

    plugins: list[dict[str, Any]] = [
        {"name": plugin.__name__} for plugin in get_mapping_from_secret_type_to_class().values()
        if plugin.__name__ not in _LEFT_OUT]
    plugins = [p for p in plugins if p["name"] != "Base64HighEntropyString"]
    plugins += [{"name": "Base64HighEntropyString", "limit": min_entropy},
                {"name": "SecretAssignmentDetector",
                 "path": "file://" + str(Path(secret_rules.__file__).resolve())}]
    with transient_settings({"plugins_used": plugins,
                             "filters_used": [{"path": path} for path in _FILTERS]}) as settings:
        # The plugin classes are cached from the settings of the first call: load ours.
        get_mapping_from_secret_type_to_class.cache_clear()
        try:
            yield settings
        finally:
            get_mapping_from_secret_type_to_class.cache_clear()
