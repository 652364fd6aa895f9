"""Which data-plane API versions the emulator serves, and what each has (docs/azure-sources.md).

A request names its surface by its path (`/openai/v1/…`: the v1 API, api-version optional `v1`/`preview`)
or by `?api-version=` (dated). Like Azure: an unknown or missing dated api-version answers 400
"API version not supported"; a path the version's spec does not list answers 404; a job-creation field the
version's spec does not list answers 400 "Unrecognized request argument supplied".
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from .state import ApiError

V1 = "v1"
GA = "2024-10-21"
PREVIEW = "2025-04-01-preview"
AUTHORING = frozenset({V1, GA, PREVIEW})
INFERENCE = frozenset({GA, PREVIEW})     # chat completions on /openai/deployments/… (no v1 spelling here)
NO_PAUSE = frozenset({GA})               # 2024-10-21 lists only /events, /checkpoints, /cancel under a job
NO_UPLOADS = frozenset({V1})             # the v1 spec has files but no /uploads

_CREATE_FIELDS = {
    GA: {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed"},
    PREVIEW: {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed", "method",
              "integrations"},
    V1: {"model", "training_file", "validation_file", "hyperparameters", "suffix", "seed", "method",
         "integrations", "metadata"},
}
_METHODS = {GA: frozenset(), PREVIEW: frozenset({"supervised", "dpo"}),
            V1: frozenset({"supervised", "dpo", "reinforcement"})}
_HYPER = {
    "supervised": {"n_epochs", "batch_size", "learning_rate_multiplier"},
    "dpo": {"n_epochs", "batch_size", "learning_rate_multiplier", "beta"},
    "reinforcement": {"n_epochs", "batch_size", "learning_rate_multiplier", "reasoning_effort",
                      "compute_multiplier", "eval_interval", "eval_samples"},
}
SUFFIX_MAX = {GA: 40, PREVIEW: 40, V1: 64}
# The base models Azure fine-tunes, by the versioned id its examples send, with their methods (Learn
# `includes/fine-tune-models.md`; DPO and reinforcement pages). Anything else is refused as Azure does
# ("The specified base model does not support fine-tuning."), an unversioned name included.
FINE_TUNABLE = {
    "gpt-35-turbo-0125": {"supervised"}, "gpt-35-turbo-1106": {"supervised"},
    "gpt-4o-mini-2024-07-18": {"supervised"}, "gpt-4o-2024-08-06": {"supervised", "dpo"},
    "gpt-4.1-2025-04-14": {"supervised", "dpo"}, "gpt-4.1-mini-2025-04-14": {"supervised", "dpo"},
    "gpt-4.1-nano-2025-04-14": {"supervised"}, "o4-mini-2025-04-16": {"reinforcement"},
}


def check_base_model(model: str, method: str, fine_tuned: set[str]) -> None:
    """A job's `model`: a fine-tunable base model id (versioned), or one of the account's own fine-tuned
    models (continuous fine-tuning, supervised)."""
    methods = FINE_TUNABLE.get(model) or ({"supervised"} if model in fine_tuned else None)
    if methods is None:
        raise ApiError(400, "invalidPayload", "The specified base model does not support fine-tuning.",
                       param="model")
    if method not in methods:
        raise ApiError(400, "invalidPayload", f"The specified base model does not support the {method} "
                       "method.", param="method.type")
UPLOAD_START = frozenset({"purpose", "filename", "bytes", "mime_type"})   # 2024-10-21 UploadFileStartBody
UPLOAD_COMPLETE = frozenset({"part_ids", "md5"})                          # UploadFileCompleteBody


def of(request: Request) -> str:
    """The request's surface, or 400 as Azure answers an api-version it does not serve."""
    version = request.query_params.get("api-version")
    if "/openai/v1/" in request.url.path:
        if version not in (None, "v1", "preview"):
            raise ApiError(400, "BadRequest", "API version not supported")
        return V1
    if version not in AUTHORING:
        raise ApiError(400, "BadRequest", "API version not supported")
    return version


def unrecognized(field: str) -> ApiError:
    return ApiError(400, "BadRequest", f"Unrecognized request argument supplied: {field}", param=field)


# Azure's v1 spec (`AzureCreateFileRequestMultiPart`) lists `expires_after` ({anchor, seconds}) as required on
# POST /files; Learn's v1 REST reference (Files › Create a file) and OpenAI's bound `seconds` to 3600 (1 hour) …
# 2592000 (30 days) and `anchor` to created_at. On a preview, Learn's batch how-to (2025-03-01-preview) allows
# 1209600 … 2592000 (14 to 30 days).
FILE_EXPIRY_SECONDS = {V1: (3600, 2_592_000), PREVIEW: (1_209_600, 2_592_000)}


def check_file_expiry(surface: str, fields: dict[str, Any]) -> int | None:
    """The file's lifetime in seconds from the multipart fields (`expires_after[anchor]`, `expires_after[seconds]`,
    as the SDKs send a nested form field); required on v1, refused when malformed on any surface."""
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        if surface == V1:
            raise ApiError(400, "invalidPayload", "The 'expires_after' field is required.", param="expires_after")
        return None
    if anchor != "created_at":
        raise ApiError(400, "invalidPayload", "expires_after.anchor must be 'created_at'.", param="expires_after.anchor")
    low, high = FILE_EXPIRY_SECONDS.get(surface, FILE_EXPIRY_SECONDS[V1])   # 2024-10-21 refuses the field first
    if seconds is None or not str(seconds).isdigit() or not low <= int(seconds) <= high:
        raise ApiError(400, "invalidPayload", f"expires_after.seconds must be between {low} and {high}.",
                       param="expires_after.seconds")
    return int(seconds)


def check_file_fields(surface: str, fields: set[str]) -> None:
    """POST /files: 2024-10-21's `FileUploadRequest` is `{purpose, file}`; v1's `AzureCreateFileRequestMultiPart`
    adds `expires_after` (sent as `expires_after[anchor]`, `expires_after[seconds]`), and Learn's batch how-to uploads
    with it on 2025-03-01-preview (the answer carries `expires_at`): a preview takes it, 14 to 30 days there
    (check_file_expiry). Any other field is refused, as in a JSON body."""
    allowed = {"file", "purpose"} | (set() if surface == GA else {"expires_after"})
    check_fields(dict.fromkeys(sorted(f.split("[", 1)[0] for f in fields)), allowed)


def upload_start_fields(surface: str) -> frozenset[str]:
    """2024-10-21 lists four; later versions know file expiry (`expires_after`): not refused there."""
    return UPLOAD_START if surface == GA else UPLOAD_START | {"expires_after"}


def check_fields(body: dict[str, Any], allowed: frozenset[str] | set[str]) -> None:
    for key in body:
        if key not in allowed:
            raise unrecognized(key)


def check_job_body(surface: str, body: dict[str, Any]) -> None:
    """Fields and method types the surface's FineTuningJobCreation lists; anything else is refused."""
    check_fields(body, _CREATE_FIELDS[surface])
    for key in (body.get("hyperparameters") or {}):
        if key not in _HYPER["supervised"]:
            raise unrecognized(f"hyperparameters.{key}")
    method = body.get("method")
    if method is None:
        return
    if not isinstance(method, dict):
        raise ApiError(400, "BadRequest", "method must be an object.", param="method")
    kind = method.get("type")
    if kind not in _METHODS[surface]:
        raise ApiError(400, "BadRequest", f"Unsupported method type '{kind}' on api-version {surface}.",
                       param="method.type")
    for key in method:
        if key not in ("type", kind):
            raise unrecognized(f"method.{key}")
    inner = method.get(kind) or {}
    for key in inner:
        if key not in ("hyperparameters", "grader", "response_format") or (key != "hyperparameters"
                                                                           and kind != "reinforcement"):
            raise unrecognized(f"method.{kind}.{key}")
    for key in (inner.get("hyperparameters") or {}):
        if key not in _HYPER[kind]:
            raise unrecognized(f"method.{kind}.hyperparameters.{key}")
    if kind == "reinforcement" and not inner.get("grader"):
        raise ApiError(400, "BadRequest", "method.reinforcement.grader is required.",
                       param="method.reinforcement.grader")
    if kind == "reinforcement":
        _check_grader(inner["grader"], "method.reinforcement.grader", 0)


# Azure's v1 spec, AzureFineTuneReinforcementMethod.grader: string_check, text_similarity, score_model or multi
# (no python, no label_model); required fields and enums as OpenAI's Grader* schemas.
_GRADER_FIELDS: dict[str, tuple[set[str], set[str]]] = {
    "string_check": ({"type", "name", "input", "reference", "operation"}, set()),
    "text_similarity": ({"type", "name", "input", "reference", "evaluation_metric"}, set()),
    "score_model": ({"type", "name", "model", "input"}, {"range", "sampling_params"}),
    "multi": ({"type", "name", "graders", "calculate_output"}, set()),
}
_GRADER_ENUMS = {"operation": {"eq", "ne", "like", "ilike"},
                 "evaluation_metric": {"fuzzy_match", "bleu", "gleu", "meteor", "rouge_1", "rouge_2", "rouge_3",
                                       "rouge_4", "rouge_5", "rouge_l"}}


def _check_grader(grader: Any, where: str, depth: int) -> None:
    def refuse(field: str, message: str) -> ApiError:
        return ApiError(400, "invalidPayload", message, param=f"{where}.{field}" if field else where)
    if not isinstance(grader, dict):
        raise refuse("", f"{where} must be an object.")
    kind = grader.get("type")
    if kind not in _GRADER_FIELDS:
        raise refuse("type", f"Invalid value for '{where}.type': '{kind}'. Expected one of "
                             f"{', '.join(sorted(_GRADER_FIELDS))}.")
    required, optional = _GRADER_FIELDS[kind]
    for field in sorted(required - set(grader)):
        raise refuse(field, f"Missing required parameter: '{where}.{field}'.")
    for field in sorted(set(grader) - required - optional):
        raise unrecognized(f"{where}.{field}")
    for field, allowed in _GRADER_ENUMS.items():
        if field in grader and grader[field] not in allowed:
            raise refuse(field, f"Invalid value for '{where}.{field}': '{grader[field]}'.")
    if kind == "multi":
        inner = grader["graders"]
        if not isinstance(inner, dict) or not inner or depth >= 3:
            raise refuse("graders", f"'{where}.graders' must be an object of graders.")
        for name, child in inner.items():
            _check_grader(child, f"{where}.graders.{name}", depth + 1)
