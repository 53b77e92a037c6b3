"""iga.provenance."""
