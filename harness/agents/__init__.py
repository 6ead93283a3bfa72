"""Agent adapters behind one small interface: scripted, subprocess, OpenAI-compatible and
the Anthropic Messages API."""

from harness.agents.anthropic import AnthropicAgent
from harness.agents.base import Agent, Briefing, drive
from harness.agents.openai import OpenAIAgent
from harness.agents.program import SubprocessAgent
from harness.agents.scripted import ScriptedAgent

__all__ = ["Agent", "AnthropicAgent", "Briefing", "OpenAIAgent", "ScriptedAgent", "SubprocessAgent", "drive"]
