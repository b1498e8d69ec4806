"""reverie-client: send a Claude agent's runs to Reverie.

Parts: `Reverie` (runs, feedback, routed config, proposals for CI; `_client`), the background
sender with its bounded queue (`_sender`), `wrap_anthropic` for `Anthropic` / `AsyncAnthropic`
(`_anthropic`), and the CI recipe `python -m reverie_client.ci` (`ci`).
"""

from reverie_client._anthropic import wrap_anthropic
from reverie_client._client import Reverie, ReverieError, ReverieTimeout, Run

__all__ = ["Reverie", "ReverieError", "ReverieTimeout", "Run", "wrap_anthropic"]
