"""The guardrails section of a configuration, fast: validated with the configuration's
models once, then kept as JSON keyed by the file's bytes, so that a pre-tool hook, run for
every tool call, reads it without loading the validation machinery."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, cast

from harness.version import __version__

if TYPE_CHECKING:
    from harness.config import Guardrails


def guardrails_for(config_path: str | Path | None) -> Guardrails:
    """The guardrails of the configuration at `config_path` (the defaults when None);
    ConfigError when it is not valid."""
    from harness.home import state_dir

    source = Path(config_path).read_bytes() if config_path is not None else b"<defaults>"
    schema = Path(__file__).resolve().parents[1] / "config.py"
    digest = hashlib.sha256(__version__.encode() + b"\0" + source + b"\0" +
                            str(schema.stat().st_mtime_ns).encode()).hexdigest()[:20]
    cache = state_dir("cache") / f"guardrails-{digest}.json"
    try:
        return _view(json.loads(cache.read_text()))
    except (OSError, ValueError):
        pass
    from harness.config import load_config

    guardrails = load_config(config_path).guardrails
    temporary = cache.with_name(f".{cache.name}.{os.getpid()}")
    temporary.write_text(json.dumps(guardrails.model_dump(mode="json")))
    temporary.replace(cache)
    return guardrails


def _view(data: dict[str, Any]) -> Guardrails:
    """Validated settings as plain attribute objects (rules as namespaces, `builtin` and
    lists as they are): what Policy reads."""
    rules = [SimpleNamespace(**rule) for rule in data.get("rules", [])]
    return cast("Guardrails", SimpleNamespace(**{**data, "rules": rules}))
