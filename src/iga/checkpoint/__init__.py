"""iga.checkpoint."""
