"""iga.recipe."""
