"""Fixtures for the dreams tests: the loopback fake Messages API (tests/fake_anthropic.py)."""

from tests.fake_anthropic import fake_anthropic, fake_gateway_settings  # noqa: F401
