"""One JSON request to a model's HTTP API, retried the way the providers ask: on a rate
limit (429), an overloaded or unavailable service (529, 503, 502, 500) and a dropped
connection, after the `retry-after` the answer names or an exponential backoff; any other
error fails at once with the provider's own message."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from harness.errors import HarnessError

RETRIED = frozenset({429, 500, 502, 503, 504, 529})
_MAX_WAIT_S = 60.0


class EndpointError(HarnessError):
    """The model's API answered with an error (or never answered)."""

    def __init__(self, message: str, *, status: int | None = None, kind: str | None = None
                 ) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        """The provider's error type (`rate_limit_error`, `overloaded_error`, ...)."""


def post_json(url: str, body: Mapping[str, Any], headers: Mapping[str, str], *,
              timeout: float, retries: int = 4, backoff_s: float = 1.0,
              sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """POST `body` as JSON and return the JSON answer, retrying what can be retried."""
    data = json.dumps(body).encode()
    for attempt in range(retries + 1):
        request = urllib.request.Request(url, data=data, method="POST", headers={
            "Content-Type": "application/json", **headers})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer: dict[str, Any] = json.loads(response.read())
                return answer
        except urllib.error.HTTPError as exc:
            error = _error(url, exc)
            if exc.code not in RETRIED or attempt == retries:
                raise error from exc
            sleep(_wait(exc.headers.get("retry-after"), backoff_s * 2 ** attempt))
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == retries:
                raise EndpointError(f"the model endpoint {url} failed: {exc}") from exc
            sleep(backoff_s * 2 ** attempt)
        except json.JSONDecodeError as exc:
            raise EndpointError(f"the model endpoint {url} answered with no JSON: {exc}"
                                ) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _error(url: str, exc: urllib.error.HTTPError) -> EndpointError:
    """The provider's error, as its body explains it (`{"error": {"type", "message"}}`)."""
    text = exc.read().decode("utf-8", "replace")
    kind, message = None, text[:500]
    try:
        detail = json.loads(text).get("error")
        if isinstance(detail, dict):
            kind, message = detail.get("type") or detail.get("code"), detail.get("message", message)
        elif isinstance(detail, str):
            message = detail
    except (json.JSONDecodeError, AttributeError):
        pass
    label = f"{exc.code} {kind}" if kind else str(exc.code)
    return EndpointError(f"the model endpoint {url} answered {label}: {message}",
                         status=exc.code, kind=kind)


def _wait(retry_after: str | None, fallback: float) -> float:
    """Seconds to wait: the server's `retry-after` (seconds) when it gives one."""
    try:
        return min(max(float(retry_after), 0.0), _MAX_WAIT_S) if retry_after else fallback
    except ValueError:
        return fallback
