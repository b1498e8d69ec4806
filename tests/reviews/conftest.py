"""Review fixtures: the loopback fake Messages API (for replays with a chosen model answer)."""

from tests.fake_anthropic import fake_anthropic, fake_gateway_settings  # noqa: F401
