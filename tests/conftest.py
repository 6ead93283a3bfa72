"""Test session set-up: real Docker, real git and real PostgreSQL, started once per session by plugins."""

pytest_plugins = ("pytester", "tests.fix_docker", "tests.fix_git", "tests.fix_pg",
                  "tests.eval.fix_ray")
