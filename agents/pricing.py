"""Token prices per model (settings.REVERIE_MODEL_PRICES, USD per million tokens)."""

from decimal import Decimal

from django.conf import settings

_MILLION = Decimal(1_000_000)


def cost_of(model: str, usage: dict[str, int]) -> Decimal:
    """Cost in USD of one call or run's usage; unknown models cost 0 (and are visible as such)."""
    prices = settings.REVERIE_MODEL_PRICES.get(model)
    if prices is None:
        # Dated ids ("claude-x-20250101") price like their alias.
        prices = next(
            (p for name, p in settings.REVERIE_MODEL_PRICES.items() if model.startswith(name)), None
        )
    if prices is None:
        return Decimal(0)
    total = (
        Decimal(usage.get("input_tokens", 0)) * Decimal(str(prices["input"]))
        + Decimal(usage.get("output_tokens", 0)) * Decimal(str(prices["output"]))
        + Decimal(usage.get("cache_read_input_tokens", 0)) * Decimal(str(prices["cache_read"]))
        + Decimal(usage.get("cache_creation_input_tokens", 0)) * Decimal(str(prices["cache_write"]))
    )
    return (total / _MILLION).quantize(Decimal("0.000001"))
