"""The episode: one agent's run in one sandbox (episode), and the runtime state it gives
the agent (state). Its tools are in harness.tools, its limits in harness.limits."""

from harness.episode.episode import ActionResult, Episode
from harness.episode.pool import EpisodePool
from harness.tools import Refusal

__all__ = ["ActionResult", "Episode", "EpisodePool", "Refusal"]
