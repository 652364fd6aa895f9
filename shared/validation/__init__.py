"""Streaming dataset validation for Azure OpenAI fine-tuning (see docs/validation.md)."""

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
