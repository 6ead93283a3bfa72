"""Hosts an agent's HTTP requests may reach: an allow-list entry parsed one way (for the
config's validation and for every request's hops), and the origin a URL names."""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass

DEFAULT_PORTS = {"http": 80, "https": 443}
HOST = re.compile(r"^(\[[0-9a-f:.]+\]|[a-z0-9._-]+)$")


@dataclass(frozen=True)
class Origin:
    """Scheme, host and port: what the allow-list and the edge headers are scoped to."""

    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        default = DEFAULT_PORTS.get(self.scheme)
        return f"{self.scheme}://{self.host}" + ("" if self.port == default
                                                 else f":{self.port}")


@dataclass(frozen=True)
class AllowedHost:
    """One allow-list entry: `host` (http or https, any port), `host:port`,
    `scheme://host` (that scheme's default port) or `scheme://host:port`."""

    host: str
    port: int | None = None
    scheme: str | None = None

    @classmethod
    def parse(cls, entry: str) -> AllowedHost:
        """The entry, or ValueError saying what is wrong with it."""
        text = entry.strip().lower()
        scheme = None
        if "://" in text:
            scheme, text = text.split("://", 1)
            if scheme not in DEFAULT_PORTS:
                raise ValueError(f"{entry!r}: only http and https hosts can be allowed")
        if not text or "/" in text or "@" in text:
            raise ValueError(f"{entry!r} is not a host, host:port or scheme://host[:port]")
        try:
            parts = urllib.parse.urlsplit("//" + text)
            host, port = host_name(parts.hostname or ""), parts.port
        except ValueError:
            raise ValueError(f"{entry!r} has a bad port") from None
        if not HOST.match(host):
            raise ValueError(f"{entry!r} is not a host, host:port or scheme://host[:port]")
        if scheme is not None and port is None:
            port = DEFAULT_PORTS[scheme]
        return cls(host, port, scheme)

    def admits(self, origin: Origin) -> bool:
        """Whether a request to `origin` is allowed by this entry."""
        return (self.host == origin.host and self.port in (None, origin.port)
                and self.scheme in (None, origin.scheme))


def host_name(host: str) -> str:
    """A host as compared: lower case, no trailing dot, IPv6 in brackets."""
    host = host.lower().rstrip(".")
    return f"[{host}]" if ":" in host else host
