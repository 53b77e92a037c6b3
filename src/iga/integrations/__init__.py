"""Integrations: iga's recipe and guard inside other tools (diffusers)."""
