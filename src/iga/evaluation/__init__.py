"""iga.evaluation."""
