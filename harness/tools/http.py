"""The http_request tool: requests the harness makes for the agent. Every hop is checked
against the allow-list (scheme, host and port) before a connection is opened to it, the
headers added at the edge go only to the origin the agent asked for, redirects are
followed by this code (never by a library's defaults) up to a cap, and no proxy from the
environment applies: the connection goes to exactly the host that was checked."""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from harness.errors import HarnessError
from harness.hosts import DEFAULT_PORTS, HOST, AllowedHost, Origin, host_name
from harness.tools.base import (
    BOOLEAN,
    INTEGER,
    STRING,
    Effect,
    Refusal,
    Tool,
    ToolContext,
    ToolResult,
    object_schema,
    result_schema,
)

_REDIRECTS = {301, 302, 303, 307, 308}
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_CREDENTIAL_HEADERS = {"authorization", "proxy-authorization", "cookie"}
_FRAMING_HEADERS = {"host", "content-length", "transfer-encoding", "connection"}


class RequestRefused(HarnessError):
    """A request (or one of its redirects) would go somewhere the allow-list does not
    permit; `rule` names the check, the message names the hop."""

    def __init__(self, rule: str, reason: str, hops: list[Hop]) -> None:
        super().__init__(reason)
        self.rule = rule
        self.hops = hops


@dataclass(frozen=True)
class Hop:
    """One request made: where to, and the status it got (a redirect's target is the next
    hop)."""

    url: str
    status: int | None = None


@dataclass(frozen=True)
class Reply:
    """The final response, and the hops that led to it."""

    status: int
    headers: dict[str, str]
    body: bytes
    truncated: bool
    url: str
    hops: list[Hop] = field(default_factory=list)


def origin_of(url: str) -> Origin:
    """The origin of an absolute http(s) URL, or RequestRefused for anything else."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise RequestRefused("http.scheme", f"{url!r} is not an http or https URL", [])
    if "@" in parts.netloc:
        raise RequestRefused("http.userinfo", f"{url!r} carries user information; the "
                             "harness adds credentials at the edge, URLs may not", [])
    try:
        host, port = host_name(parts.hostname or ""), parts.port
    except ValueError:
        raise RequestRefused("http.bad-url", f"{url!r} has a bad port", []) from None
    if not host or not HOST.match(host):
        raise RequestRefused("http.bad-url", f"{url!r} has no usable host name", [])
    return Origin(scheme, host, port if port is not None else DEFAULT_PORTS[scheme])


def fetch(method: str, url: str, *, allow: list[AllowedHost], headers: Mapping[str, str],
          edge_headers: Mapping[str, str], body: bytes | None = None, timeout: float = 10.0,
          max_bytes: int = 1 << 20, max_redirects: int = 5) -> Reply:
    """Make the request, following redirects by hand: each hop is admitted by `allow` or
    the whole request is refused (RequestRefused naming the hop); `edge_headers` are sent
    only to the first URL's origin, and credential headers of the agent's own only there
    too. Ends at the first non-redirect reply, at most `max_redirects` redirects later."""
    deadline = time.monotonic() + timeout
    first = origin_of(url)
    for where, given in (("the agent's", headers), ("an edge", edge_headers)):
        for name, value in given.items():
            if not _HEADER_NAME.match(name) or not _header_value_ok(value):
                shown = name if where == "the agent's" or _HEADER_NAME.match(name) else "?"
                raise RequestRefused("http.bad-header", f"{where} header {shown!r} has a "
                                     "character HTTP does not allow (a line break, a control "
                                     "character or one outside Latin-1)", [])
    agent = {k: v for k, v in headers.items() if k.lower() not in _FRAMING_HEADERS
             and k.lower() not in {e.lower() for e in edge_headers}}
    hops: list[Hop] = []
    current, origin = url, first
    while True:
        if not any(entry.admits(origin) for entry in allow):
            where = f"hop {len(hops) + 1} ({hops[-1].status} redirect from {hops[-1].url} " \
                f"to {current}): " if hops else ""
            raise RequestRefused(
                "http.host-not-allowed",
                f"{where}{origin} is not in tools.http.allow_hosts; nothing was sent to it",
                hops)
        if hops and first.scheme == "https" and origin.scheme == "http":
            raise RequestRefused(
                "http.downgrade", f"hop {len(hops) + 1} ({hops[-1].status} redirect from "
                f"{hops[-1].url} to {current}) leaves https for plain http", hops)
        sent = dict(agent) if origin == first else {
            k: v for k, v in agent.items() if k.lower() not in _CREDENTIAL_HEADERS}
        if origin == first:
            sent.update({k: v for k, v in edge_headers.items() if v})
        status, reply_headers, location, data = _send(
            origin, method, current, sent, body, max(deadline - time.monotonic(), 0.001),
            max_bytes)
        hops.append(Hop(current, status))
        if status not in _REDIRECTS or location is None:
            return Reply(status, reply_headers, data[:max_bytes], len(data) > max_bytes,
                         current, hops)
        if len(hops) > max_redirects:
            chain = " -> ".join(f"{h.url} ({h.status})" for h in hops)
            raise RequestRefused("http.too-many-redirects",
                                 f"more than {max_redirects} redirects (tools.http."
                                 f"max_redirects): {chain}", hops)
        current = urllib.parse.urljoin(current, location.strip()).split("#", 1)[0]
        try:
            origin = origin_of(current)
        except RequestRefused as exc:
            raise RequestRefused(exc.rule, f"hop {len(hops) + 1} ({status} redirect from "
                                 f"{hops[-1].url}): {exc}", hops) from None
        if status == 303 or (status in (301, 302) and method == "POST"):
            method = "GET" if method != "HEAD" else "HEAD"
            body = None
            agent = {k: v for k, v in agent.items() if k.lower() != "content-type"}


def _send(origin: Origin, method: str, url: str, headers: Mapping[str, str],
          body: bytes | None, timeout: float, max_bytes: int
          ) -> tuple[int, dict[str, str], str | None, bytes]:
    import http.client  # on first request: tools load without the TLS stack
    import ssl

    parts = urllib.parse.urlsplit(url)
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    host = origin.host.strip("[]")
    connection: http.client.HTTPConnection = (
        http.client.HTTPSConnection(host, origin.port, timeout=timeout,
                                    context=ssl.create_default_context())
        if origin.scheme == "https" else
        http.client.HTTPConnection(host, origin.port, timeout=timeout))
    try:
        connection.request(method, target, body=body, headers=dict(headers))
        response = connection.getresponse()
        data = b"" if method == "HEAD" else response.read(max_bytes + 1)
        return (response.status, dict(response.getheaders()), response.getheader("Location"),
                data)
    finally:
        connection.close()


def _header_value_ok(value: str) -> bool:
    try:
        value.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return not any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in value)


def http_request(context: ToolContext, p: Mapping[str, Any]) -> ToolResult:
    """Make the request (see `fetch`); a hop off the allow-list refuses it."""
    import http.client

    settings = context.config.tools.http
    body = p.get("body")
    try:
        reply = fetch(p["method"], p["url"],
                      allow=[AllowedHost.parse(entry) for entry in settings.allow_hosts],
                      headers=p.get("headers") or {}, edge_headers=context.edge_headers,
                      body=body.encode() if body is not None else None,
                      timeout=settings.timeout_s, max_bytes=settings.max_response_bytes,
                      max_redirects=settings.max_redirects)
    except RequestRefused as exc:
        return ToolResult("refused", {"redirects": [{"url": hop.url, "status": hop.status}
                                                    for hop in exc.hops]},
                          Refusal("http", exc.rule, str(exc)))
    except (OSError, http.client.HTTPException) as exc:
        return ToolResult("error", {"error": f"request failed: {type(exc).__name__}: {exc}"})
    context.count_output(len(reply.body))
    return ToolResult("ok", {"status": reply.status, "headers": reply.headers,
                             "body": reply.body.decode("utf-8", errors="replace"),
                             "truncated": reply.truncated, "url": reply.url,
                             "redirects": [{"url": hop.url, "status": hop.status}
                                           for hop in reply.hops[:-1]]})


TOOLS = [
    Tool("http_request", "Make an HTTP request to an allow-listed host; the harness adds "
         "configured auth headers.",
         object_schema(["method", "url"],
                       method={"type": "string",
                               "enum": ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]},
                       url=STRING, headers={"type": "object",
                                            "additionalProperties": {"type": "string"}},
                       body=STRING),
         http_request, affects=frozenset({Effect.NETWORK}),
         output=result_schema({
             "status": INTEGER, "headers": {"type": "object",
                                            "additionalProperties": STRING},
             "body": STRING, "truncated": BOOLEAN, "url": STRING,
             "redirects": {"type": "array", "items": {"type": "object", "properties": {
                 "url": STRING, "status": INTEGER}}}})),
]
