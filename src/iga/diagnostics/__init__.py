"""iga.diagnostics."""
