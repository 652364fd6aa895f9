"""The reinforcement grader of a fine-tuning job, checked against the shapes Azure's v1 spec accepts.

`AzureFineTuneReinforcementMethod.grader` (spec `OpenAI.v1/azure-v1-v1-generated.json`, Learn's v1 REST reference)
is one of string_check, text_similarity, score_model or multi; each shape's required fields and enums are
OpenAI's (`OpenAI.GraderStringCheck`, `GraderTextSimilarity`, `GraderScoreModel`, `GraderMulti`). A python or
label_model grader, or one missing a required field, would be refused when the job is created: ftops refuses
it first, naming the field (docs/azure-sources.md). Vocabulary only: no I/O, no other room of `shared`.
"""
from __future__ import annotations

from typing import Any

from shared.run.echo import echo

ON_AZURE_V1 = ("string_check", "text_similarity", "score_model", "multi")
NOT_ON_AZURE_V1 = {"python": "python graders", "label_model": "label_model graders"}
OPERATIONS = ("eq", "ne", "like", "ilike")
METRICS = ("fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5",
           "rouge_l")
ROLES = ("user", "assistant", "system", "developer")
# type → (required fields, optional fields)
SHAPES: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "string_check": (frozenset({"type", "name", "input", "reference", "operation"}), frozenset()),
    "text_similarity": (frozenset({"type", "name", "input", "reference", "evaluation_metric"}), frozenset()),
    "score_model": (frozenset({"type", "name", "model", "input"}), frozenset({"range", "sampling_params"})),
    "multi": (frozenset({"type", "name", "graders", "calculate_output"}), frozenset()),
}
MAX_DEPTH = 3   # a multi grader inside a multi grader inside …: bounded


def grader_problems(grader: Any, *, path: str = "grader", depth: int = 0) -> list[str]:
    """What is wrong with one reinforcement grader, each with the field's path; [] when the v1 spec accepts it."""
    if not isinstance(grader, dict):
        return [f"{path}: must be an object with a 'type'"]
    kind = grader.get("type")
    if kind in NOT_ON_AZURE_V1:
        return [(f"{path}.type: {NOT_ON_AZURE_V1[kind]} are not accepted by Azure's v1 fine-tuning API "
                f"(AzureFineTuneReinforcementMethod.grader is one of {', '.join(ON_AZURE_V1)})")]
    if kind not in SHAPES:
        return [f"{path}.type: {echo(kind, 40)!r} is not a grader type; one of {', '.join(ON_AZURE_V1)}"]
    required, optional = SHAPES[kind]
    problems = [f"{path}.{key}: required for a {kind} grader" for key in sorted(required - grader.keys())]
    problems += [f"{path}.{echo(key, 40)}: not a field of a {kind} grader"
                 for key in sorted(map(str, grader.keys() - required - optional))[:10]]
    problems += [f"{path}.{key}: must be a non-empty string" for key in ("name", "input", "reference", "model",
                                                                          "calculate_output")
                 if key in grader and key in required and not (kind == "score_model" and key == "input")
                 and not (isinstance(grader[key], str) and grader[key].strip())]
    if kind == "string_check" and "operation" in grader and grader["operation"] not in OPERATIONS:
        problems.append(f"{path}.operation: one of {', '.join(OPERATIONS)}")
    if kind == "text_similarity" and "evaluation_metric" in grader and grader["evaluation_metric"] not in METRICS:
        problems.append(f"{path}.evaluation_metric: one of {', '.join(METRICS)}")
    if kind == "score_model":
        problems += _score_model_problems(grader, path)
    if kind == "multi" and "graders" in grader:
        inner = grader["graders"]
        if not isinstance(inner, dict) or not inner:
            problems.append(f"{path}.graders: an object of name → grader")
        elif depth >= MAX_DEPTH:
            problems.append(f"{path}.graders: nested more than {MAX_DEPTH} deep")
        else:
            for name, child in inner.items():
                problems += grader_problems(child, path=f"{path}.graders.{echo(name, 40)}", depth=depth + 1)
    return problems


def _score_model_problems(grader: dict[str, Any], path: str) -> list[str]:
    problems = []
    messages = grader.get("input")
    if "input" in grader and (not isinstance(messages, list) or not messages):
        problems.append(f"{path}.input: a non-empty list of messages ({{role, content}})")
    elif isinstance(messages, list):
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ROLES or "content" not in m:
                problems.append(f"{path}.input[{i}]: a message with a role ({', '.join(ROLES)}) and content")
    if "range" in grader:
        bounds = grader["range"]
        if not (isinstance(bounds, list) and len(bounds) == 2
                and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds) and bounds[0] < bounds[1]):
            problems.append(f"{path}.range: two numbers, low then high")
    if "sampling_params" in grader and not isinstance(grader["sampling_params"], dict):
        problems.append(f"{path}.sampling_params: an object")
    return problems
