"""Command groups of the `iga` CLI; each module exposes register(app)."""
