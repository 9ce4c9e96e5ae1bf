"""The daemon fixtures of tests/service, for the video commands' tests."""

from ..service.conftest import start_daemon  # noqa: F401 - a fixture, used by name
