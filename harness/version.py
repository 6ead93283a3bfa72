"""The harness version: what reports, traces, the MCP server and cluster nodes say they run."""

__version__ = "0.1.0"
