"""iga.guard."""
