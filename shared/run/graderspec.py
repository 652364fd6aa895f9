"""A reinforcement run's grader as the service reads it: `{{ namespace.path }}` templates and a `multi`
grader's `calculate_output` formula, parsed without `eval`, and the checks intake runs on both.

The rules follow OpenAI's graders guide (developers.openai.com/api/docs/guides/graders, "Templating",
"Multigraders", "Python graders"): namespaces `item` (the data line's fields) and `sample` (`output_text`,
`output_json`, `output_tools`, `choices`), nested values by a JSON-path-like syntax (`item.a.b`,
`sample.output_tools[0].function.name`); a formula over the sub-graders' keys with `+ - * / ^`, parentheses,
numbers and `min max abs floor ceil exp sqrt log`; no multi inside a multi. Pure functions: the evaluation
renders and computes with them (shared.evaluation.rft), intake checks with them (shared.run.settings).
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from shared.run.rft_graders import OPERATIONS

NAMESPACES = ("item", "sample")
SAMPLE_FIELDS = ("output_text", "output_json", "output_tools", "choices")
FUNCTIONS: dict[str, Callable[..., float]] = {
    "min": min, "max": max, "abs": abs, "floor": math.floor, "ceil": math.ceil, "exp": math.exp,
    "sqrt": math.sqrt, "log": math.log}
TEXT_METRICS = ("fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3", "rouge_4", "rouge_5", "rouge_l")
RFT_KINDS = ("string_check", "text_similarity", "score_model", "label_model", "python", "multi")
MAX_FORMULA = 1000

_TEMPLATE = re.compile(r"\{\{(.*?)\}\}", re.DOTALL)
_PATH = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*)((?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d+\])*)\s*")
_STEP = re.compile(r"\.([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


class SpecError(ValueError):
    """A grader the evaluation cannot run as the service would, with the reason."""


# --- templates ------------------------------------------------------------------------------------------
def parse_path(text: str) -> tuple[str, list[str | int]]:
    """`item.a.b[0]` → ("item", ["a", "b", 0]); SpecError for anything else."""
    m = _PATH.fullmatch(text)
    if not m or m.group(1) not in NAMESPACES:
        raise SpecError(f"{{{{{text}}}}}: a template is {{{{item.<field>}}}} or {{{{sample.<field>}}}}")
    steps: list[str | int] = [int(i) if i else str(k) for k, i in _STEP.findall(m.group(2))]
    if not steps:
        raise SpecError(f"{{{{{text}}}}}: name a field of {m.group(1)}")
    if m.group(1) == "sample" and steps[0] not in SAMPLE_FIELDS:
        raise SpecError(f"{{{{{text}}}}}: sample has {', '.join(SAMPLE_FIELDS)}")
    return m.group(1), steps


def template_problems(text: Any) -> list[str]:
    if not isinstance(text, str):
        return []
    problems = []
    for m in _TEMPLATE.finditer(text):
        try:
            parse_path(m.group(1))
        except SpecError as exc:
            problems.append(str(exc))
    return problems


def lookup(namespaces: Mapping[str, Any], text: str) -> Any:
    """The value a template path names (None when the data has no such field)."""
    namespace, steps = parse_path(text)
    value: Any = namespaces.get(namespace)
    for step in steps:
        if isinstance(step, int) and isinstance(value, list) and step < len(value):
            value = value[step]
        elif isinstance(step, str) and isinstance(value, Mapping):
            value = value.get(step)
        else:
            return None
    return value


def render(text: str, namespaces: Mapping[str, Any]) -> str:
    """Every `{{ … }}` replaced by its value: text as is, anything else as JSON, a missing field as ''."""
    def one(m: re.Match[str]) -> str:
        value = lookup(namespaces, m.group(1))
        return "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return _TEMPLATE.sub(one, text)


# --- calculate_output -------------------------------------------------------------------------------------
_TOKEN = re.compile(r"\s*(?:(\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+)|([A-Za-z_][A-Za-z0-9_]*)|(.))")


def _tokens(formula: str) -> list[tuple[str, str]]:
    out = []
    for number, name, other in _TOKEN.findall(formula.strip()):
        if number:
            out.append(("num", number))
        elif name:
            out.append(("name", name))
        elif other.strip():
            if other not in "+-*/^(),":
                raise SpecError(f"calculate_output: {other!r} is not an operator (+ - * / ^)")
            out.append(("op", other))
    return out


Formula = Callable[[Mapping[str, float]], float]


def parse_formula(formula: str, names: list[str]) -> Formula:
    """`calculate_output` → a function of the sub-graders' scores. Recursive descent, `^` right-associative
    and above unary minus (as in -2^2 = -4); SpecError naming what is wrong."""
    if len(formula) > MAX_FORMULA:
        raise SpecError(f"calculate_output is longer than {MAX_FORMULA} characters")
    tokens, position = _tokens(formula), 0

    def peek() -> tuple[str, str] | None:
        return tokens[position] if position < len(tokens) else None

    def take(kind: str, value: str | None = None) -> str:
        nonlocal position
        token = peek()
        if token is None or token[0] != kind or (value is not None and token[1] != value):
            raise SpecError(f"calculate_output {formula!r}: expected {value or kind} at token {position + 1}")
        position += 1
        return token[1]

    def left_assoc(ops: str, operand: Callable[[], Formula]) -> Formula:
        left = operand()
        while (token := peek()) and token[0] == "op" and token[1] in ops:
            take("op")
            left = _binary(token[1], left, operand())
        return left

    def expression() -> Formula:
        return left_assoc("+-", term)

    def term() -> Formula:
        return left_assoc("*/", unary)

    def unary() -> Formula:
        if (token := peek()) and token == ("op", "-"):
            take("op")
            inner = unary()
            return lambda s: -inner(s)
        if (token := peek()) and token == ("op", "+"):
            take("op")
            return unary()
        return power()

    def power() -> Formula:
        base = atom()
        if (token := peek()) and token == ("op", "^"):
            take("op")
            exponent = unary()
            return lambda s: float(base(s) ** exponent(s))
        return base

    def atom() -> Formula:
        token = peek()
        if token is None:
            raise SpecError(f"calculate_output {formula!r}: ends too early")
        if token[0] == "num":
            value = float(take("num"))
            return lambda s: value
        if token == ("op", "("):
            take("op", "(")
            inner = expression()
            take("op", ")")
            return inner
        if token[0] == "name":
            name = take("name")
            if (nxt := peek()) and nxt == ("op", "("):
                if name not in FUNCTIONS:
                    raise SpecError(f"calculate_output: {name}() is not one of {', '.join(FUNCTIONS)}")
                take("op", "(")
                args = [expression()]
                while peek() == ("op", ","):
                    take("op", ",")
                    args.append(expression())
                take("op", ")")
                function = FUNCTIONS[name]
                return lambda s: float(function(*(a(s) for a in args)))
            if name not in names:
                raise SpecError(f"calculate_output: {name!r} is not one of the graders ({', '.join(names)})")
            return lambda s: float(s[name])
        raise SpecError(f"calculate_output {formula!r}: unexpected {token[1]!r}")

    result = expression()
    if position != len(tokens):
        raise SpecError(f"calculate_output {formula!r}: unexpected {tokens[position][1]!r} at token {position + 1}")
    return result


_OPERATORS: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a / b}


def _binary(op: str, left: Formula, right: Formula) -> Formula:
    apply = _OPERATORS[op]

    def value(scores: Mapping[str, float]) -> float:
        return apply(left(scores), right(scores))
    return value


# --- intake's check ---------------------------------------------------------------------------------------
def grader_problems(grader: Mapping[str, Any], *, inside_multi: bool = False, python_ok: bool = False) -> list[str]:
    """What stops the evaluation from grading as the service does; [] when it can. A python grader cannot be
    run here with the service's limits, so it is refused unless run.json names `evaluation.graders`
    (`python_ok`: the evaluation then uses those instead)."""
    kind = grader.get("type")
    name = grader.get("name") or kind
    if kind not in RFT_KINDS:
        return [f"grader {name}: type {kind!r} is not one of {', '.join(RFT_KINDS)}"]
    problems: list[str] = []
    for key in ("input", "reference"):
        value = grader.get(key)
        texts = [m.get("content") for m in value if isinstance(m, Mapping)] if isinstance(value, list) else [value]
        problems += [f"grader {name}: {key}: {p}" for t in texts for p in template_problems(t)]
    if kind == "multi":
        if inside_multi:
            return [f"grader {name}: a multi grader cannot hold another multi grader"]
        inner = grader.get("graders")
        if not isinstance(inner, Mapping) or not inner:
            return [f"grader {name}: a multi grader needs 'graders' as an object of named graders"]
        for key, spec in inner.items():
            problems += (grader_problems(spec, inside_multi=True, python_ok=python_ok) if isinstance(spec, Mapping)
                         else [f"grader {name}.{key}: not an object"])
        try:
            parse_formula(str(grader.get("calculate_output") or ""), list(inner))
        except SpecError as exc:
            problems.append(f"grader {name}: {exc}")
    elif kind == "python" and not python_ok:
        problems.append(f"grader {name}: a python grader cannot run in ftops's evaluation with the service's "
                        "limits (2 min, 2 GB, no network); name graders that stand in for it in run.json "
                        "'evaluation.graders'")
    elif kind in ("score_model", "label_model"):
        if not isinstance(grader.get("model"), str) or not isinstance(grader.get("input"), list):
            problems.append(f"grader {name}: a {kind} grader needs 'model' and 'input' (a list of messages)")
        rng = grader.get("range", [0, 1])
        if kind == "score_model" and not (isinstance(rng, list) and len(rng) == 2 and
                                          all(isinstance(v, (int, float)) for v in rng) and rng[0] < rng[1]):
            problems.append(f"grader {name}: 'range' must be [low, high] with low < high")
        if kind == "label_model" and not (isinstance(grader.get("passing_labels"), list) and grader["passing_labels"]):
            problems.append(f"grader {name}: a label_model grader needs 'passing_labels'")
    elif kind == "string_check" and grader.get("operation") not in OPERATIONS:
        problems.append(f"grader {name}: operation must be eq, ne, like or ilike")
    elif kind == "text_similarity" and grader.get("evaluation_metric") not in TEXT_METRICS and not python_ok:
        problems.append(f"grader {name}: evaluation_metric {grader.get('evaluation_metric')!r} cannot run in ftops's "
                        f"evaluation (it offers {', '.join(TEXT_METRICS)}: cosine needs an embeddings deployment, "
                        "meteor WordNet data); name graders that stand in for it in run.json 'evaluation.graders'")
    return problems
