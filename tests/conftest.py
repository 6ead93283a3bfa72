"""Test session set-up: real Docker and real git, started once per session by plugins."""

pytest_plugins = ("tests.fix_docker", "tests.fix_git")
