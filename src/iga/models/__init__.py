"""iga.models."""
