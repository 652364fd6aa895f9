"""One validation truth: every check a drop gets, the same whether intake runs it on blobs or
`ftops validate` on local files.

In order: the run's settings (the full run.json schema, the environments it names), what the drop is (a
.jsonl file, a folder with train.jsonl), the data (formats, tokens, limits, privacy, overlap; the method
detected from the data when the settings do not set it), then the split (enough examples left to train on
and to evaluate with). Settings problems do not stop the data from being read: the report holds both, so one
look tells a data scientist everything that is wrong (issue 22). What is not a dataset at all is not read.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any

from shared.run.hub_api import HubSurface, UnsupportedOnSurface
from shared.run.rules import environment_problems
from shared.run.settings import RunSettings, RunSettingsError, parse_run_settings
from shared.run.topology import Topology
from shared.validation import DatasetReport, Finding, ValidationOptions, validate_dataset
from shared.validation.sniff import sniff
from shared.validation.splitting import Prepared, spool_split

Opener = Callable[[], Iterable[bytes]]
SNIFF_BYTES = 4096
RUN_JSON_MAX_BYTES = 64 * 1024   # run.json holds settings: larger is refused unread (one finding per key once ran to GiB)
MAX_SETTINGS_FINDINGS = 50       # findings about the settings kept in the report; the rest are counted


@dataclass(frozen=True)
class DropFiles:
    """What a drop holds, wherever it lives."""
    start: str                              # the file that starts the run: <name>.jsonl or <folder>/run.json
    folder: bool
    data: Mapping[str, Opener]              # role (train, validation, eval) → its bytes
    names: Mapping[str, str]                # role → the name findings carry
    run_json: bytes | None = None           # a folder's run.json
    problems: tuple[Finding, ...] = ()      # found before the check (a folder's train.jsonl never came)


@dataclass
class DropCheck:
    report: DatasetReport
    settings: RunSettings | None            # with the detected method filled in
    prepared: Prepared | None               # the split's counts (and hash), once the data passed


def check_drop(drop: DropFiles, *, default_base_model: str, environments: list[str] | None,
               override: dict[str, Any] | None = None, override_source: str = "train command settings",
               outputs: Mapping[str, IO[bytes]] | None = None, hub_api: HubSurface | None = None,
               topology: Topology | None = None, default_owner: str | None = None) -> DropCheck:
    """`environments`: the configured ones (None: not known here, not checked). `outputs`: where the
    split is written (intake uploads it); by default it is only counted. `hub_api`: the configured hub
    API surface, whose methods the run's method must be among (None: not checked). `topology`: the spokes
    configuration, for where the run may go (a prefix of the order; an owner object id for gated ones).
    `default_owner`: the owner when the settings name none (the verified person who started the run)."""
    problems: list[Finding] = []
    defaults = {"base_model": default_base_model, **({"owner": default_owner} if default_owner else {})}
    settings = _settings(drop, defaults, environments, override, override_source, problems)
    if settings is not None and topology is not None:
        wrong = environment_problems(settings, topology)
        if wrong:
            problems.extend(Finding(line=None, code="invalid_settings", file="run.json", message=p) for p in wrong)
            settings = None
    problems += drop.problems
    if not drop.folder and not drop.start.endswith(".jsonl"):
        problems.append(_not_a_dataset(drop))
    if settings is None or problems or "train" not in drop.data:
        readable = "train" in drop.data and (drop.folder or drop.start.endswith(".jsonl"))
        if not readable:
            return DropCheck(_problems_only(problems), settings, None)
        report = validate_dataset(drop.data, options=_fallback_options(settings, override, default_base_model),
                                  names=drop.names)
        return DropCheck(dataclasses.replace(report, valid=False, errors=[*problems, *report.errors]), None, None)
    detect = not settings.method_is_set
    report = validate_dataset(drop.data, options=_options(settings), names=drop.names)
    report.method_source = "detected" if detect else "settings"
    if detect and report.method:
        settings = _with_method(settings, report.method, drop, report)
    if hub_api is not None and settings is not None and settings.method not in hub_api.methods:
        try:
            hub_api.require_method(settings.method)
        except UnsupportedOnSurface as exc:   # refused here, before any upload or job
            report = dataclasses.replace(report, valid=False, errors=[
                *report.errors, Finding(line=None, code="method_not_on_hub_api", message=str(exc))])
    if not report.valid and settings is not None and any(f.code == "too_few_examples" for f in report.errors):
        # a file under the service's minimum: say what the split needs too, or adding 9 examples to one example
        # would only meet the next refusal (the held-out minimum)
        short = spool_split(drop.data, settings).problem
        if short:
            report = dataclasses.replace(report, errors=[
                *report.errors, Finding(line=None, code="too_few_to_split", message=short)])
    if not report.valid or settings is None:
        return DropCheck(report, settings, None)
    prepared = spool_split(drop.data, settings, outputs)
    if prepared.problem:   # part of the report, so what people read says why
        report = dataclasses.replace(report, valid=False, errors=[
            *report.errors, Finding(line=None, code="too_few_to_split", message=prepared.problem)])
    return DropCheck(report, settings, prepared)


def _options(settings: RunSettings) -> ValidationOptions:
    """How to read the data under these settings (the method detected from the data when they set none)."""
    return ValidationOptions(model=settings.base_model, method=settings.method if settings.method_is_set else None,
                             pii=settings.pii, over_limit=settings.over_limit,
                             n_epochs=settings.hyperparameters.n_epochs)


def _fallback_options(settings: RunSettings | None, override: dict[str, Any] | None,
                      default_base_model: str) -> ValidationOptions:
    """How to read the data when the settings are not usable: theirs if they parsed, else the flags' values that
    are valid on their own, else the defaults (the method then detected from the data)."""
    if settings is not None:
        return _options(settings)
    given = override or {}

    def choice(key: str, allowed: tuple[str, ...], default: str | None) -> str | None:
        value = given.get(key)
        return value if isinstance(value, str) and value in allowed else default

    return ValidationOptions(model=str(given.get("base_model") or default_base_model),
                             method=choice("method", ("supervised", "dpo", "reinforcement"), None),
                             pii=choice("pii", ("error", "warn"), "error") or "error",
                             over_limit=choice("over_limit", ("error", "warn"), "error") or "error")


def _settings(drop: DropFiles, defaults: dict[str, Any], environments: list[str] | None,
              override: dict[str, Any] | None, override_source: str, problems: list[Finding]) -> RunSettings | None:
    try:
        settings = parse_run_settings(drop.run_json, defaults=defaults,
                                      source=drop.start if drop.folder else "settings")
        if override:
            settings = parse_run_settings({**settings.model_dump(exclude_unset=True), **override},
                                          defaults=defaults, source=override_source)
    except RunSettingsError as exc:
        shown = exc.problems[:MAX_SETTINGS_FINDINGS]
        if len(exc.problems) > len(shown):
            shown = [*shown, f"… and {len(exc.problems) - len(shown):,} more problems of the same settings"]
        problems.extend(Finding(line=None, code="invalid_settings", message=p, file="run.json") for p in shown)
        return None
    unknown = [e for e in (settings.environments or []) if environments is not None and e not in environments]
    if unknown:
        problems.append(Finding(line=None, code="invalid_settings", file="run.json",
                                message=f"environments: {', '.join(unknown)} not configured in SPOKES_CONFIG"))
        return None
    return settings


def _with_method(settings: RunSettings, method: str, drop: DropFiles, report: DatasetReport) -> RunSettings | None:
    """The settings with the detected method, checked again (a grader or beta must fit it)."""
    try:
        return parse_run_settings({**settings.model_dump(exclude_unset=True), "method": method},
                                  source=f"{drop.start if drop.folder else 'settings'} (method {method}, "
                                         "detected from the data)")
    except RunSettingsError as exc:
        report.valid = False
        report.errors.extend(Finding(line=None, code="invalid_settings", message=p, file="run.json")
                             for p in exc.problems)
        return None


def _not_a_dataset(drop: DropFiles) -> Finding:
    what = ""
    opener = drop.data.get("train")
    if opener is not None:
        head = b""
        for chunk in opener():
            head += bytes(chunk)
            if len(head) >= SNIFF_BYTES:
                break
        kind = sniff(head)
        what = f" ({kind.name}: {kind.fix})" if kind else ""
    return Finding(line=None, code="not_a_dataset", file=drop.start,
                   message=f"{drop.start}: not a .jsonl file{what}; drop a JSONL dataset or a folder with "
                           "train.jsonl and run.json")


def problems_only(problems: list[Finding]) -> DropCheck:
    """The check of a drop refused before (or instead of) reading its data: the report of `problems`."""
    return DropCheck(_problems_only(problems), None, None)


def _problems_only(problems: list[Finding]) -> DatasetReport:
    return DatasetReport(valid=False, method=None, examples=0, errors=list(problems), warnings=[], stats={},
                         files={})
