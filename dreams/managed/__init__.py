"""Claude Managed Agents connector: link, session sync, webhooks, hosted dreams, memory apply."""
