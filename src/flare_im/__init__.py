"""Flare: an open-source instant-messaging server (WebSocket + REST), embedded or clustered."""

# The one version source: pyproject.toml reads it, `flare --version` prints it, CHANGELOG.md names it.
__version__ = "0.1.0"
