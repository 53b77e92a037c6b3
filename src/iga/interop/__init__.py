"""Interop: recipes drafted from what models already carry, and exported to other tools."""
