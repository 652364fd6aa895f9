"""Evaluation: metrics, gates, checkpoint choice, reports and plots; `handle_evaluate` is the stage handler.

Submodules are pure (metrics, gates, examples, report, svg, runner) except `hubdeploy` and `stage`, which
talk to the hub; SDK imports stay inside functions so importing this package is cheap at cold start.
"""
from __future__ import annotations

from shared.evaluation.stage import handle_evaluate

__all__ = ["handle_evaluate"]
