"""A run's settings: `run.json` in a dataset folder (or a train command), over configured defaults.

Validated at the edge like data: an invalid run.json rejects the run with a report naming the setting,
before anything reaches the hub.
"""
from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shared.run.echo import echo
from shared.run.graderspec import grader_problems as evaluation_problems
from shared.run.heldout import MIN_HELD_OUT
from shared.run.models import DEFAULT_BASE_MODEL
from shared.run.rft_graders import grader_problems


class RunSettingsError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Hyperparameters(_Strict):
    n_epochs: int | None = Field(None, ge=1, le=50)
    batch_size: int | None = Field(None, ge=1, le=256)
    learning_rate_multiplier: float | None = Field(None, gt=0, le=10)
    beta: float | None = Field(None, ge=0, le=2)   # DPO only


class Split(_Strict):
    """Fractions of a single-file dataset held out for validation and evaluation (seeded, by content)."""
    validation: float = Field(0.1, ge=0, lt=0.5)
    eval: float = Field(0.2, gt=0, lt=0.5)


class Thresholds(_Strict):
    """Acceptance gates for evaluation (docs/evaluation.md, "Gates")."""
    grader: str | None = None                          # the grader min_score/min_improvement use; default: the first
    min_score: float = Field(0.5, ge=0, le=1)          # mean score of the fine-tuned model
    min_improvement: float = Field(0.05, ge=-1, le=1)  # over the base model (and over the champion, below)
    # lower_bound: the paired bootstrap interval's lower bound must clear min_improvement; mean: the old rule
    improvement_rule: Literal["lower_bound", "mean"] = "lower_bound"
    # against what the environment serves today: non_inferior (lower bound ≥ −non_inferiority_margin) or
    # superior (lower bound ≥ min_improvement_over_champion)
    champion_rule: Literal["non_inferior", "superior"] = "non_inferior"
    non_inferiority_margin: float = Field(0.1, ge=0, le=0.5)
    min_improvement_over_champion: float = Field(0.0, ge=-1, le=1)
    # answers a grader could not score (a judge that failed), as a share of the examples, per candidate
    max_grader_error_rate: float = Field(0.05, ge=0, le=1)
    max_latency_p95_ms: float | None = Field(None, gt=0)
    max_error_rate: float = Field(0.1, ge=0, le=1)
    max_content_filter_rate: float = Field(0.02, ge=0, le=1)
    # distillation (the flywheel's student): its cost per 1,000 requests at most this fraction of the champion's
    max_cost_ratio_vs_champion: float | None = Field(None, gt=0, le=1)


_GRADER_NAME = r"[a-z0-9][a-z0-9_.-]{0,39}"
_Similarity = Literal["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l"]


class GraderSpec(_Strict):
    """One grader (kinds after Azure OpenAI's graders; docs/evaluation.md, "Graders")."""
    type: Literal["token_f1", "string_check", "text_similarity", "json_valid", "json_match", "tool_call_match",
                  "score_model"]
    name: str | None = Field(None, pattern=_GRADER_NAME)
    operation: Literal["eq", "ne", "like", "ilike"] | None = None          # string_check
    evaluation_metric: _Similarity | None = None
    model: str | None = Field(None, max_length=64)                          # score_model: a hub deployment
    rubric: str | None = Field(None, max_length=2000)                       # score_model
    reference: str | None = Field(None, pattern=r"^\{\{\s*item\.[A-Za-z0-9_]+\s*\}\}$")

    @model_validator(mode="after")
    def _fields_of_kind(self) -> GraderSpec:
        needs = {"string_check": "operation", "text_similarity": "evaluation_metric", "score_model": "model"}
        for kind, key in needs.items():
            if self.type == kind and getattr(self, key) is None:
                raise ValueError(f"a {kind} grader needs '{key}'")
            if self.type != kind and getattr(self, key) is not None:
                raise ValueError(f"'{key}' applies only to a {kind} grader")
        if self.rubric is not None and self.type != "score_model":
            raise ValueError("'rubric' applies only to a score_model grader")
        return self

    def effective_name(self) -> str:
        detail = self.operation or self.evaluation_metric
        return self.name or (f"{self.type}_{detail}" if detail else self.type)


class Evaluation(_Strict):
    """How the evaluate stage judges: graders (default: from the data's shape), calls in flight, champion."""
    graders: list[GraderSpec] | None = Field(None, min_length=1, max_length=12)
    concurrency: int = Field(8, ge=1, le=64)   # calls in flight per deployment to start with; grows until 429
    max_examples: int = Field(200, ge=MIN_HELD_OUT, le=5000)   # a seeded sample of the eval file, at most this
    champion: bool = True     # also evaluate what the run's deployment name serves today, and gate on it

    @model_validator(mode="after")
    def _unique_names(self) -> Evaluation:
        names = [g.effective_name() for g in self.graders or []]
        if len(set(names)) != len(names):
            raise ValueError(f"grader names must differ (give each a 'name'): {names}")
        return self


class Origin(_Strict):
    """Where a run came from when ftops itself started it (the flywheel: shared.stages.harvest)."""
    kind: Literal["flywheel"]
    environment: str = Field(max_length=32)
    deployment_name: str = Field(max_length=64)
    champion_run: str = Field(max_length=200)
    pool: str = Field(max_length=64)


class RunSettings(_Strict):
    schema_version: Literal[1] = 1
    base_model: str = DEFAULT_BASE_MODEL
    # unset: detected from the data at intake (and by `ftops validate`), then stored with the run
    method: Literal["supervised", "dpo", "reinforcement"] = "supervised"
    hyperparameters: Hyperparameters = Hyperparameters()
    grader: dict[str, Any] | None = None                # reinforcement only
    seed: int = 42
    suffix: str | None = Field(None, max_length=18)     # sources say 18, 40 or 64: keep to the smallest
    split: Split = Split()
    deployment_name: str | None = Field(None, max_length=64)
    environments: list[str] | None = None               # default: every configured environment, in order
    thresholds: Thresholds = Thresholds()
    evaluation: Evaluation = Evaluation()
    owner: str | None = None
    ticket: str | None = None
    pii: Literal["error", "warn"] = "error"
    over_limit: Literal["error", "warn"] = "error"
    origin: Origin | None = None

    @field_validator("suffix", "deployment_name")
    @classmethod
    def _name_chars(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '-', '_' and '.', starting with a letter or digit")
        return value

    @model_validator(mode="after")
    def _method_specific(self) -> RunSettings:
        if "method" not in self.model_fields_set:
            return self   # detected from the data, then checked again with it (shared.validation.drop)
        if self.method == "reinforcement" and not self.grader:
            raise ValueError("method 'reinforcement' needs a 'grader'")
        if self.method != "reinforcement" and self.grader:
            raise ValueError("'grader' applies only to method 'reinforcement'")
        if self.method != "dpo" and self.hyperparameters.beta is not None:
            raise ValueError("hyperparameters.beta applies only to method 'dpo'")
        return self

    @model_validator(mode="after")
    def _gate_grader_exists(self) -> RunSettings:
        named = self.thresholds.grader
        if named and self.evaluation.graders and named not in [g.effective_name() for g in self.evaluation.graders]:
            raise ValueError(f"thresholds.grader {named!r} is not one of evaluation.graders")
        return self

    @property
    def method_is_set(self) -> bool:
        return "method" in self.model_fields_set

    def effective_deployment_name(self, run_name: str) -> str:
        return self.deployment_name or self.suffix or _slug(run_name)[:64]

    def job_hyperparameters(self) -> dict[str, Any]:
        return self.hyperparameters.model_dump(exclude_none=True)


def parse_run_settings(raw: bytes | str | dict[str, Any] | None, *, defaults: dict[str, Any] | None = None,
                       source: str = "run.json") -> RunSettings:
    """run.json (or a command's settings) over the configured defaults; RunSettingsError names each problem."""
    if raw is None or raw == b"" or raw == "":
        data: Any = {}
    elif isinstance(raw, dict):
        data = raw
    else:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RunSettingsError([f"{source}: not valid JSON ({echo(exc)})"]) from exc
        except RecursionError as exc:
            raise RunSettingsError([f"{source}: not valid JSON (nested too deeply to parse)"]) from exc
    if not isinstance(data, dict):
        raise RunSettingsError([f"{source}: must be a JSON object"])
    merged = {**(defaults or {}), **data}
    try:
        settings = RunSettings.model_validate(merged)
    except ValidationError as exc:
        raise RunSettingsError([
            f"{source}: {echo('.'.join(str(p) for p in e['loc']) or '<root>')}: {echo(e['msg'], 400)}"
            for e in exc.errors()
        ]) from exc
    # a grader's reference from the line's item: only reinforcement lines have one (their other fields); on chat
    # or DPO lines it rendered empty and every answer was graded against "" without a word
    if settings.method_is_set and settings.method != "reinforcement" and (
            templated := [g.effective_name() for g in settings.evaluation.graders or [] if g.reference]):
        raise RunSettingsError([(f"{source}: evaluation.graders {', '.join(templated)}: 'reference' reads a field of "
                                f"a reinforcement line's item; {settings.method} lines are graded against their "
                                "answer (the last assistant message, or the preferred output): remove 'reference'")])
    # the reinforcement grader, field by field, against the shapes Azure's v1 API accepts (shared.run.rft_graders),
    # then what the evaluation needs to grade with it as the service does (templates, formula, range)
    if settings.method == "reinforcement" and settings.grader and (
            wrong := grader_problems(settings.grader)
            or evaluation_problems(settings.grader, python_ok=settings.evaluation.graders is not None)):
        raise RunSettingsError([f"{source}: {problem}" for problem in wrong])
    return settings


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-") or "run"
