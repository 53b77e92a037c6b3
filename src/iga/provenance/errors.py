"""The one error type of iga.provenance."""

from __future__ import annotations


class ProvenanceError(ValueError):
    """Image metadata that cannot be written or read safely: says what, where, and what to do."""
