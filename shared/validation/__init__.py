"""Streaming dataset validation for Azure OpenAI fine-tuning (see docs/validation.md), and a drop's checks
before it becomes a run (`drop`: its files and settings; `splitting`: the seeded train/validation/eval split).

May import `shared.run`, `shared.store`, `shared.azure` and `shared.app`; the raw scan's helper process loads
`rawscan.py` and `shared/run/privacy.py` alone, by path.
"""

from __future__ import annotations

from .codes import CODES
from .engine import validate_dataset, validate_file
from .html import render_html
from .lines import content_hash, iter_examples
from .options import DatasetReport, FileReport, Finding, Tuning, ValidationOptions

__all__ = [
    "CODES",
    "DatasetReport",
    "FileReport",
    "Finding",
    "Tuning",
    "ValidationOptions",
    "content_hash",
    "iter_examples",
    "render_html",
    "validate_dataset",
    "validate_file",
]
