"""iga.sampling."""
