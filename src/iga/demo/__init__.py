"""iga.demo."""
