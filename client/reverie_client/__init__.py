"""reverie-client: send a Claude agent's runs to Reverie.

Parts: `Reverie` (runs, feedback, routed config; `_client`), the background sender with its
bounded queue (`_sender`), and `wrap_anthropic` for `Anthropic` / `AsyncAnthropic` (`_anthropic`).
"""

from reverie_client._anthropic import wrap_anthropic
from reverie_client._client import Reverie, ReverieError, Run

__all__ = ["Reverie", "ReverieError", "Run", "wrap_anthropic"]
