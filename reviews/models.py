"""Review decisions, rollouts and notifications (see DESIGN.md)."""
