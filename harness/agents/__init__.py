"""Agent adapters behind one small interface: scripted, subprocess and OpenAI-compatible."""

from harness.agents.base import Agent, Briefing, drive
from harness.agents.openai import OpenAIAgent
from harness.agents.program import SubprocessAgent
from harness.agents.scripted import ScriptedAgent

__all__ = ["Agent", "Briefing", "OpenAIAgent", "ScriptedAgent", "SubprocessAgent", "drive"]
