"""iga.provenance: embed the generation Plan in images, and read any tool's generation metadata back.

Writing (``save_image``): PNG gets ``parameters`` (A1111 infotext, read by A1111, Forge, Civitai, ComfyUI's
importer) and ``iga_metadata`` (the Plan as JSON); JPEG/WebP get the same two in EXIF. Reading
(``read_provenance``): iga, A1111, ComfyUI and InvokeAI metadata, normalised to one ``Provenance`` record.
All readers treat files as hostile: bounded sizes, bounded inflation, no trust in offsets.

Light on import: Pillow is imported only when an image is written.
"""

from __future__ import annotations

from iga.provenance.errors import ProvenanceError
from iga.provenance.filename import DEFAULT_PATTERN, format_filename, unique_path
from iga.provenance.infotext import format_infotext, parse_infotext
from iga.provenance.labels import a1111_labels
from iga.provenance.read import Provenance, read_provenance
from iga.provenance.save import save_image

__all__ = [
    "DEFAULT_PATTERN",
    "Provenance",
    "ProvenanceError",
    "a1111_labels",
    "format_filename",
    "format_infotext",
    "parse_infotext",
    "read_provenance",
    "save_image",
    "unique_path",
]
