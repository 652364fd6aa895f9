"""Run states (DESIGN.md: exact strings) and the transitions allowed between them."""
from __future__ import annotations

RECEIVED = "received"
VALIDATING = "validating"
REJECTED = "rejected"
ACCEPTED = "accepted"
UPLOADING = "uploading"
WAITING_FOR_QUOTA = "waiting_for_quota"
TRAINING = "training"
TRAINING_FAILED = "training_failed"
CANCELLED = "cancelled"
TRAINED = "trained"
EVALUATING = "evaluating"
EVALUATION_FAILED = "evaluation_failed"
EVALUATED = "evaluated"
APPROVAL_DENIED = "approval_denied"
RETIRED = "retired"

_TERMINAL = {REJECTED, TRAINING_FAILED, CANCELLED, EVALUATION_FAILED, APPROVAL_DENIED, RETIRED}


def deploying(env: str) -> str:
    return f"deploying:{env}"


def deployed(env: str) -> str:
    return f"deployed:{env}"


def awaiting_approval(env: str) -> str:
    return f"awaiting_approval:{env}"


def deployment_failed(env: str) -> str:
    return f"deployment_failed:{env}"


def rolled_back(env: str) -> str:
    """The run's current model was taken out of `env` by a rollback (the slots serve an earlier model, of this
    run or another); terminal: a retrain starts a new model, retire removes what is left elsewhere."""
    return f"rolled_back:{env}"


def split(state: str) -> tuple[str, str | None]:
    """'deployed:prod' → ('deployed', 'prod'); 'training' → ('training', None)."""
    kind, _, env = state.partition(":")
    return kind, (env or None)


def is_terminal(state: str, last_environment: str | None = None) -> bool:
    """Terminal states; `deployed:<env>` is terminal only for the run's last environment."""
    kind, env = split(state)
    if state in _TERMINAL or kind in ("deployment_failed", "rolled_back"):
        return True
    return kind == "deployed" and env is not None and env == last_environment


# Which states may precede each state (by kind for the environment-qualified ones).
_ALLOWED_FROM: dict[str, set[str]] = {
    VALIDATING: {RECEIVED, VALIDATING},
    REJECTED: {RECEIVED, VALIDATING},
    ACCEPTED: {VALIDATING},
    UPLOADING: {ACCEPTED, UPLOADING, WAITING_FOR_QUOTA, TRAINING_FAILED, CANCELLED, TRAINED, EVALUATED,
                EVALUATION_FAILED, "deployed", "deployment_failed", APPROVAL_DENIED,
                "rolled_back"},  # retrain re-enters here
    WAITING_FOR_QUOTA: {UPLOADING, WAITING_FOR_QUOTA, TRAINING},
    TRAINING: {UPLOADING, WAITING_FOR_QUOTA},
    TRAINING_FAILED: {UPLOADING, WAITING_FOR_QUOTA, TRAINING},
    CANCELLED: {ACCEPTED, UPLOADING, WAITING_FOR_QUOTA, TRAINING},
    TRAINED: {TRAINING},
    EVALUATING: {TRAINED},
    EVALUATION_FAILED: {EVALUATING},
    EVALUATED: {EVALUATING},
    "deploying": {EVALUATED, "deployed", "awaiting_approval", "deploying"},
    "deployed": {"deploying", "deployed"},
    "awaiting_approval": {"deployed"},
    APPROVAL_DENIED: {"awaiting_approval"},
    "deployment_failed": {"deploying"},
    "rolled_back": {"deployed", "awaiting_approval", "rolled_back"},
    RETIRED: {"deployed", "deployment_failed", "awaiting_approval", APPROVAL_DENIED, EVALUATED, "rolled_back"},
}


# Target kind → source kinds that must name the same environment (deploying:test → deployed:test only).
_SAME_ENVIRONMENT = {"deployed": {"deploying", "deployed"}, "deployment_failed": {"deploying"},
                     "deploying": {"deploying", "awaiting_approval"}}


def can_transition(current: str, target: str) -> bool:
    allowed = _ALLOWED_FROM.get(target) or _ALLOWED_FROM.get(split(target)[0], set())
    if not (current in allowed or split(current)[0] in allowed):
        return False
    (kind, env), (current_kind, current_env) = split(target), split(current)
    return not (current_kind in _SAME_ENVIRONMENT.get(kind, ()) and current_env != env)
