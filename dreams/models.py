"""Dream cycles, failure patterns, proposals, experiments and replays (see DESIGN.md)."""
