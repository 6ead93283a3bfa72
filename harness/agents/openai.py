"""An agent behind any endpoint speaking the OpenAI Chat Completions tool-calling protocol
(OpenAI, vLLM, Ollama, llama.cpp server, ...), by base URL and model name."""

from __future__ import annotations

import json
from typing import Any

from harness.agents.base import Agent, Briefing, Proposal
from harness.agents.endpoint import EndpointError, post_json
from harness.episode import ActionResult

SYSTEM = ("You are a coding agent working in a sandbox through tools. Use the tools to do "
          "the task; when it is done, answer without calling a tool.\n\n{state}")


class OpenAIAgent(Agent):
    """Keeps the conversation; each step returns the model's next tool call (several calls
    in one answer are played in order), or None when it answers without one."""

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None,
                 timeout: float = 120.0, temperature: float | None = 0.0, retries: int = 4,
                 backoff_s: float = 1.0) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.timeout = timeout
        self.retries = retries
        self.backoff_s = backoff_s
        self.temperature = temperature
        self.messages: list[dict[str, Any]] = []
        self.tools: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._waiting_for: str | None = None

    def start(self, briefing: Briefing) -> None:
        self.tools = briefing.tools
        self.messages = [{"role": "system", "content": SYSTEM.format(state=briefing.state)},
                         {"role": "user", "content": briefing.task}]

    def next(self, last: ActionResult | None) -> Proposal | None:
        if last is not None and self._waiting_for is not None:
            self.messages.append({"role": "tool", "tool_call_id": self._waiting_for,
                                  "content": last.observation()})
            self._waiting_for = None
        if not self._pending:
            message = self._complete()
            self.messages.append(message)
            self._pending = list(message.get("tool_calls") or [])
            if not self._pending:
                return None
        call = self._pending.pop(0)
        self._waiting_for = call.get("id")
        function = call.get("function") or {}
        arguments = function.get("arguments") or "{}"
        try:
            parameters = json.loads(arguments) if isinstance(arguments, str) else arguments
        except json.JSONDecodeError:
            return f"{{malformed arguments from the model: {arguments[:200]}"
        return {"tool": function.get("name", ""), "parameters": parameters}

    def _complete(self) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.model, "messages": self.messages,
                                "tools": self.tools, "tool_choice": "auto"}
        if self.temperature is not None:
            body["temperature"] = self.temperature
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        data = post_json(self.url, body, headers, timeout=self.timeout, retries=self.retries,
                         backoff_s=self.backoff_s)
        try:
            message = data["choices"][0]["message"]
        except (KeyError, IndexError, TypeError) as exc:
            raise EndpointError(f"the model endpoint answered without a message: {data}"
                                ) from exc
        return {k: v for k, v in message.items() if k in ("role", "content", "tool_calls")}
