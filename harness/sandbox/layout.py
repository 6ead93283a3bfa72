"""Where things are inside every sandbox: the one place that says so (the container mounts
them there, the guardrails judge paths against them, the tools resolve paths from them)."""

WORKSPACE = "/workspace"
"""The throwaway clone, and the agent's working folder."""
HOME = "/home/agent"
"""The agent's home folder."""
TMP = "/tmp"
"""Scratch space."""
DATABASE_SOCKET = "/var/run/postgresql"
"""The sandbox database server's socket folder."""
