"""An agent behind the Anthropic Messages API (`POST /v1/messages`): tools as `tool_use`
blocks, their outcomes returned together as `tool_result` blocks in one user turn, the
stop reasons honoured, rate limits and overload retried (see `endpoint`)."""

from __future__ import annotations

from typing import Any

from harness.agents.base import Agent, Briefing, Proposal
from harness.agents.endpoint import EndpointError, post_json
from harness.agents.openai import SYSTEM
from harness.episode import ActionResult

API_VERSION = "2023-06-01"
DEFAULT_BASE_URL = "https://api.anthropic.com"


class AnthropicAgent(Agent):
    """Keeps the conversation; each step returns the model's next `tool_use` (several in
    one answer are played in order, and their results sent back in one turn), or None
    when the model ends its turn without one."""

    def __init__(self, model: str, *, base_url: str = DEFAULT_BASE_URL,
                 api_key: str | None = None, max_tokens: int = 4096,
                 temperature: float | None = 0.0, timeout: float = 120.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/v1/messages"
        self.model = model
        self.api_key = api_key
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.system = ""
        self.tools: list[dict[str, Any]] = []
        self.messages: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        """Why the model's last answer ended (`end_turn`, `tool_use`, `max_tokens`, ...)."""
        self._pending: list[dict[str, Any]] = []
        self._results: list[dict[str, Any]] = []
        self._waiting_for: str | None = None

    def start(self, briefing: Briefing) -> None:
        self.system = SYSTEM.format(state=briefing.state)
        self.tools = [{"name": t["function"]["name"],
                       "description": t["function"].get("description", ""),
                       "input_schema": t["function"]["parameters"]} for t in briefing.tools]
        self.messages = [{"role": "user", "content": briefing.task}]

    def next(self, last: ActionResult | None) -> Proposal | None:
        if last is not None and self._waiting_for is not None:
            self._results.append({"type": "tool_result", "tool_use_id": self._waiting_for,
                                  "content": last.observation(),
                                  **({"is_error": True} if last.status != "ok" else {})})
            self._waiting_for = None
        if not self._pending:
            if self._results:
                self.messages.append({"role": "user", "content": self._results})
                self._results = []
            self._pending = self._answer()
            if not self._pending:
                return None
        call = self._pending.pop(0)
        self._waiting_for = call["id"]
        parameters = call.get("input")
        if not isinstance(parameters, dict):
            return f"{{malformed input from the model: {str(parameters)[:200]}"
        return {"tool": call.get("name", ""), "parameters": parameters}

    def _answer(self) -> list[dict[str, Any]]:
        """Ask the model until it ends its turn; its tool calls, in order."""
        content: list[dict[str, Any]] = []
        for _ in range(8):  # a paused turn (server-side tools) is resumed as it is
            message = self._complete()
            blocks = message.get("content")
            if not isinstance(blocks, list):
                raise EndpointError(f"the model endpoint {self.url} answered without content: "
                                    f"{str(message)[:300]}")
            content = blocks
            self.stop_reason = message.get("stop_reason")
            self.messages.append({"role": "assistant", "content": content})
            if self.stop_reason != "pause_turn":
                break
        if self.stop_reason == "max_tokens":
            # A tool call cut off mid-way cannot run; the episode ends with what it has.
            return []
        return [block for block in content if block.get("type") == "tool_use"]

    def _complete(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "max_tokens": self.max_tokens,
                                "system": self.system, "messages": self.messages,
                                "tools": self.tools, "tool_choice": {"type": "auto"}}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"anthropic-version": API_VERSION}
        if self.api_key:
            headers["x-api-key"] = self.api_key
        return post_json(self.url, body, headers, timeout=self.timeout, retries=self.retries,
                         backoff_s=self.backoff_s)
