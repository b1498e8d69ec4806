"""Types shared by the gateway's parts: typed errors, the call context, usage of a message."""

from dataclasses import dataclass

from anthropic.types import Message

from agents.models import Agent
from dreams.models import DreamCycle, Experiment, Replay

# Backends that spend nothing: their calls are priced at $0 wherever spend is shown (`local` is
# the llama.cpp model on this machine, dreams/llm/local/).
FREE_BACKENDS = frozenset({"simulated", "recorded", "local"})


class ModelError(Exception):
    """Base of the gateway's typed errors; callers record them and carry on cleanly."""


class BudgetExceeded(ModelError):
    """The call would take the agent over its cycle or monthly token budget."""


class ModelUnavailable(ModelError):
    """The model kept failing (overloaded, rate limited, 5xx, timeout) after every retry."""


class ModelRequestError(ModelError):
    """The API refused the request itself (4xx other than 408/409/429); retrying cannot help."""


class UnusableAnswer(ModelRequestError):
    """The model answered, but not in the form asked for (no forced tool call, an answer cut off
    at max_tokens): its tokens are spent and recorded, the reason is on its ModelCall row."""


class NeedsDatabase(Exception):
    """Internal: the budget check needs a query, which the event loop thread must not run."""


@dataclass(frozen=True)
class CallContext:
    """Who spends a call and what for (stored on its ModelCall row)."""

    agent: Agent
    purpose: str
    cycle: DreamCycle | None = None
    experiment: Experiment | None = None
    replay: Replay | None = None


def usage_dict(message: Message) -> dict[str, int]:
    usage = message.usage
    return {
        "input_tokens": usage.input_tokens or 0,
        "output_tokens": usage.output_tokens or 0,
        "cache_read_input_tokens": usage.cache_read_input_tokens or 0,
        "cache_creation_input_tokens": usage.cache_creation_input_tokens or 0,
    }
