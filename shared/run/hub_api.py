"""Which hub API ftops talks to, and what each one can do (docs/azure-sources.md, "Hub (data plane)").

`HUB_API_VERSION` names the surface of the hub's authoring API (files, fine-tuning jobs):
- `v1` (default): `https://<hub>/openai/v1/…`, no api-version. Generally available for files and
  fine-tuning; has pause/resume and `method` (supervised, dpo, reinforcement). Its spec has no multipart
  uploads API, so every file goes through the Files API (at most 512 MB).
- `2025-04-01-preview`: pause/resume and `method` (supervised, dpo); the uploads API for large files.
- `2024-10-21` (the last dated GA): no pause/resume, no `method` (supervised only, top-level
  hyperparameters); the uploads API.
What a surface lacks is refused here, before any call, with a sentence that names the setting.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

V1 = "v1"
DEFAULT = V1
INFERENCE_API_VERSION = "2024-10-21"   # chat completions on deployments (hub and spokes): the GA inference API
FILES_API_MAX_BYTES = 512 * 1024 * 1024
# Azure's v1 `AzureCreateFileRequestMultiPart`: expires_after {anchor: created_at, seconds}; OpenAI's reference
# allows 3600 … 2592000 seconds. 30 days is the most, and the longest a job may train (720 h, Learn quotas-limits).
FILE_EXPIRY: dict[str, Any] = {"anchor": "created_at", "seconds": 30 * 24 * 3600}


class UnsupportedOnSurface(ValueError):
    """The configured hub API cannot do this; the message says which surface can."""


@dataclass(frozen=True)
class HubSurface:
    version: str
    methods: frozenset[str]
    pause_resume: bool
    uploads: bool

    @property
    def is_v1(self) -> bool:
        return self.version == V1

    @property
    def upload_fields(self) -> dict[str, Any]:
        """What a file upload carries besides the file and its purpose: v1's spec requires `expires_after` (the
        longest lifetime allowed, so a file outlives its job and still never stays forever); the dated APIs'
        specs have no such field."""
        return {"expires_after": FILE_EXPIRY} if self.is_v1 else {}

    @property
    def sends_method(self) -> bool:
        """Whether job creation carries `method` (else top-level `hyperparameters`, supervised only)."""
        return "dpo" in self.methods

    def require_method(self, method: str) -> None:
        if method not in self.methods:
            able = [v for v, s in SURFACES.items() if method in s.methods]
            needs = f"it needs {' or '.join(repr(v) for v in able)}" if able else "no hub API ftops knows has it"
            raise UnsupportedOnSurface(
                f"method {method!r} is not available on hub API {self.version!r} (HUB_API_VERSION); {needs}")

    def require_pause_resume(self, action: str) -> None:
        if not self.pause_resume:
            able = [v for v, s in SURFACES.items() if s.pause_resume]
            raise UnsupportedOnSurface(
                f"{action} is not available on hub API {self.version!r} (HUB_API_VERSION has no "
                f"/fine_tuning/jobs/{{id}}/{action}); it needs {' or '.join(repr(v) for v in able)}")

    def require_upload_size(self, size: int, filename: str) -> None:
        if not self.uploads and size > FILES_API_MAX_BYTES:
            raise UnsupportedOnSurface(
                f"{filename} is {size / 1024**2:.0f} MB: the Files API takes at most 512 MB and hub API "
                f"{self.version!r} has no uploads API; use HUB_API_VERSION=2025-04-01-preview for larger files")


SURFACES: dict[str, HubSurface] = {
    V1: HubSurface(V1, frozenset({"supervised", "dpo", "reinforcement"}), pause_resume=True, uploads=False),
    "2025-04-01-preview": HubSurface("2025-04-01-preview", frozenset({"supervised", "dpo"}), pause_resume=True,
                                     uploads=True),
    "2024-10-21": HubSurface("2024-10-21", frozenset({"supervised"}), pause_resume=False, uploads=True),
}


def surface(version: str) -> HubSurface:
    try:
        return SURFACES[version]
    except KeyError:
        raise UnsupportedOnSurface(f"HUB_API_VERSION {version!r} is not one ftops knows; use one of "
                                   f"{', '.join(sorted(SURFACES))}") from None
