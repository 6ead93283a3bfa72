"""Episodes on sandboxes made ahead of time, for one configuration."""

from __future__ import annotations

from typing import Any

from harness.config import Config
from harness.episode.episode import Episode
from harness.sandbox.pool import SandboxPool


class EpisodePool:
    """`pool.episode()` is an `Episode(config)` whose sandbox was ready before it was
    asked for. `with EpisodePool(config, size=2) as pool:` keeps `size` ready for the
    config's target (all the configuration's episodes share one key) and removes the
    ready ones at the end. A pool of sandboxes may be shared by several EpisodePools."""

    def __init__(self, config: Config, size: int = 1, *, max_total: int = 8,
                 idle_expiry_s: float = 600.0, sandboxes: SandboxPool | None = None) -> None:
        self.config = config
        self._own = sandboxes is None
        self.sandboxes = sandboxes or SandboxPool(size, max_total=max_total,
                                                  idle_expiry_s=idle_expiry_s)

    def warm(self, *, wait: bool = False, timeout: float = 300.0) -> EpisodePool:
        """Start making the configuration's sandboxes now (with `wait`, until ready)."""
        target = self.config.target
        self.sandboxes.warm(target.repo or "", ref=target.branch, settings=self.config.sandbox,
                            database=target.database, wait=wait, timeout=timeout)
        return self

    def episode(self, **options: Any) -> Episode:
        """An episode (not yet open: `with pool.episode() as episode:`) whose sandbox
        comes from the pool; `options` are Episode's."""
        return Episode(self.config, pool=self.sandboxes, **options)

    def close(self) -> None:
        """Remove the ready sandboxes (when this pool made its SandboxPool)."""
        if self._own:
            self.sandboxes.close()

    def __enter__(self) -> EpisodePool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
