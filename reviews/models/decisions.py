"""Review decisions, comments and assignments."""
