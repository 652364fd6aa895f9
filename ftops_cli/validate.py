"""`ftops validate PATH`: check a JSONL file or a run folder before (or without) uploading it.

The same checks intake runs, through the same code (shared.validation.drop): run.json's full schema, the
method detected from the data when nothing sets it, the data itself, and the split. The flags override
run.json as a train command's settings do.

Exit codes: 0 accepted (warnings allowed), 1 rejected, 2 usage error or unreadable path.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from ftops_cli.errors import UsageError
from shared.run.hub_api import DEFAULT as DEFAULT_HUB_API
from shared.run.hub_api import HubSurface, UnsupportedOnSurface, surface
from shared.run.models import UnknownModelError, known_models, model_facts
from shared.run.topology import Topology
from shared.validation import DatasetReport, Finding
from shared.validation.drop import DropFiles, check_drop
from shared.validation.html import method_note

CHUNK = 4 << 20
RUN_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "eval": "eval.jsonl"}
PROGRESS_MIN_BYTES = 32 << 20  # smaller inputs finish before a bar would help


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    p = subparsers.add_parser("validate", help="validate a fine-tuning dataset (file or run folder)",
                              description=__doc__)
    p.add_argument("path", help="a JSONL file, or a run folder with train/validation/eval.jsonl")
    p.add_argument("--model", default=None,
                   help="base model (default: run.json base_model, else DEFAULT_BASE_MODEL, else gpt-4.1-mini-2025-04-14)")
    p.add_argument("--method", choices=("supervised", "dpo", "reinforcement"), default=None,
                   help="fine-tuning method (default: run.json method, else detected from the data)")
    p.add_argument("--grader", default=None, metavar="FILE|JSON",
                   help="the reinforcement grader, a JSON file or inline JSON, checked against the shapes Azure's "
                        "v1 API accepts (implies --method reinforcement); a run folder's run.json may hold it instead")
    p.add_argument("--pii", choices=("error", "warn"), default=None,
                   help="personal data is an error or a warning (default: run.json pii, else error)")
    p.add_argument("--over-limit", choices=("error", "warn"), default=None,
                   help="examples over the model's token limit are an error or a warning "
                        "(default: run.json over_limit, else error)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.set_defaults(func=run)
    return p


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _inputs(path: Path) -> DropFiles:
    """The drop as intake would see it: a single file, or a folder's run.json and data files."""
    if path.is_dir():
        files = {role: path / name for role, name in RUN_FILES.items() if (path / name).is_file()}
        start = path / "run.json"
        problems: tuple[Finding, ...] = ()
        if "train" not in files:
            problems = (Finding(line=None, code="missing_file", file=f"{path.name}/train.jsonl",
                                message=f"{path.name}/train.jsonl is missing; a run folder needs it"),)
        run_json = _read(start) if start.is_file() else None
        return DropFiles(start=f"{path.name}/run.json", folder=True, data=_openers(files),
                         names={r: p.name for r, p in files.items()}, run_json=run_json, problems=problems)
    if not path.is_file():
        raise UsageError(f"{path}: no such file or folder")
    return DropFiles(start=path.name, folder=False, data=_openers({"train": path}), names={"train": path.name})


def _openers(files: dict[str, Path]) -> dict[str, Callable[[], Iterator[bytes]]]:
    for p in files.values():
        if not os.access(p, os.R_OK):
            raise UsageError(f"{p}: not readable")
    return {role: functools.partial(_chunks, p) for role, p in files.items()}


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror or exc})") from None


def _override(args: argparse.Namespace) -> dict[str, Any]:
    """The flags, over run.json, as a train command's settings are at intake."""
    flags = {"base_model": args.model, "method": args.method, "pii": args.pii, "over_limit": args.over_limit}
    grader = getattr(args, "grader", None)
    if grader is not None:
        flags["grader"] = _grader(grader)
        flags["method"] = args.method or "reinforcement"
    return {k: v for k, v in flags.items() if v is not None}


def _grader(value: str) -> Any:
    """--grader: inline JSON (it starts with `{`) or the path of a JSON file."""
    text, where = value, "--grader"
    if not value.lstrip().startswith("{"):
        path = Path(value)
        if not path.is_file():
            raise UsageError(f"--grader {value}: neither inline JSON nor a file")
        text, where = _read(path).decode("utf-8", "replace"), str(path)
    try:
        return json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{where}: not JSON ({exc})") from None


def _configured(env: Mapping[str, str]) -> tuple[str, list[str] | None, HubSurface, Topology | None]:
    """The default base model, the environments and the hub API as this machine's settings have them
    (intake reads the same settings); without SPOKES_CONFIG the environments run.json names are not checked."""
    default = env.get("DEFAULT_BASE_MODEL") or "gpt-4.1-mini-2025-04-14"
    try:
        hub_api = surface(env.get("HUB_API_VERSION") or DEFAULT_HUB_API)
    except UnsupportedOnSurface as exc:
        raise UsageError(str(exc)) from None
    if not env.get("SPOKES_CONFIG"):
        return default, None, hub_api, None
    from shared.run.config import ConfigError, load_spokes_json
    from shared.run.topology import parse_topology
    try:
        spokes = load_spokes_json(env["SPOKES_CONFIG"])
        # the topology too: where a run may go (a prefix of the order; gated runs name an owner object id)
        return default, [e["name"] for e in spokes.get("environments", [])], hub_api, parse_topology(spokes)
    except (ConfigError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"SPOKES_CONFIG: {exc}") from None


class _Progress:
    """A one-line progress bar on stderr, only on a terminal and only for large inputs."""

    def __init__(self, sizes: dict[str, int], stream: TextIO) -> None:
        self.sizes, self.stream = sizes, stream
        self.enabled = stream.isatty() and sum(sizes.values()) >= PROGRESS_MIN_BYTES
        self.last = 0.0

    def __call__(self, role: str, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.2:
            return
        self.last = now
        total = self.sizes.get(role) or 1
        frac = min(1.0, done / total)
        bar = "#" * int(frac * 30)
        self.stream.write(f"\r{role:<10} [{bar:<30}] {frac:6.1%} {done >> 20}/{total >> 20} MiB")
        self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def _summary(report: DatasetReport, out: TextIO, split: dict[str, int] | None, unchecked_envs: bool) -> None:
    stats = report.stats
    tok = stats.get("tokens", {})
    per = tok.get("per_example", {})
    cost = stats.get("cost", {})
    verdict = "ACCEPTED" if report.valid else "REJECTED"
    out.write(f"{verdict}: {report.examples} examples, method {report.method or 'unknown'}, "
              f"{len(report.errors)} errors, {len(report.warnings)} warnings\n")
    if note := method_note(report):
        out.write(f"method: {note}\n")
    if split:
        out.write("split: " + ", ".join(f"{n} {role}" for role, n in split.items()) + "\n")
    if unchecked_envs:
        out.write("note: SPOKES_CONFIG is not set here, so run.json's environments were not checked\n")
    several = len(report.files) > 1
    for title, findings in (("errors", report.errors), ("warnings", report.warnings)):
        if findings:
            out.write(f"\n{title}:\n")
        for f in findings:
            where = f"{f.file}:" if several and f.file else ""
            line = f"line {f.line}" if f.line is not None else "file"
            out.write(f"  {where}{line}: {f.code}: {f.message}\n")
    if not report.examples:
        return
    out.write(f"\ntokens: {tok.get('total', 0):,} total, {tok.get('assistant', 0):,} in assistant messages; "
              f"per example min {per.get('min')} / median {per.get('median')} / p95 {per.get('p95')} / "
              f"max {per.get('max')} (limit {tok.get('limit')})\n")
    if cost.get("estimated_usd") is not None:
        out.write(f"cost estimate: {cost['billed_tokens']:,} billed tokens ({cost['epochs']} epochs) x "
                  f"${cost['price_per_1m_tokens']}/1M = ~${cost['estimated_usd']:,.2f} (estimate)\n")
    elif cost.get("note"):
        out.write(f"cost: {cost['note']} (~${cost.get('price_per_hour')}/h, estimate)\n")


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None,
        env: Mapping[str, str] | None = None) -> int:
    """`env`: the settings to read (DEFAULT_BASE_MODEL, SPOKES_CONFIG); the process environment by default."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        drop = _inputs(Path(args.path))
        if args.model:
            try:
                model_facts(args.model)
            except UnknownModelError:
                raise UsageError(f"unknown model {args.model!r}; known: {', '.join(known_models())}") from None
        default_model, environments, hub_api, topology = _configured(os.environ if env is None else env)
        override = _override(args)
    except (UsageError, ValueError) as exc:
        err.write(f"ftops validate: {exc}\n")
        return 2
    paths = {r: Path(args.path) / RUN_FILES[r] if drop.folder else Path(args.path) for r in drop.data}
    progress = _Progress({r: p.stat().st_size for r, p in paths.items()}, err)
    try:
        checked = check_drop(_with_progress(drop, progress), default_base_model=default_model,
                             environments=environments, override=override, override_source="command line",
                             hub_api=hub_api, topology=topology)
    except OSError as exc:
        progress.close()
        err.write(f"ftops validate: cannot read {args.path}: {exc.strerror or exc}\n")
        return 2
    progress.close()
    report = checked.report
    if args.json:
        body = report.to_dict()
        if checked.prepared is not None:
            body["split"] = checked.prepared.counts
        out.write(json.dumps(body, ensure_ascii=False) + "\n")
    else:
        unchecked = environments is None and bool(checked.settings and checked.settings.environments)
        _summary(report, out, checked.prepared.counts if checked.prepared else None, unchecked)
    return 0 if report.valid else 1


def _with_progress(drop: DropFiles, progress: _Progress) -> DropFiles:
    def counted(role: str, opener: Callable[[], Iterable[bytes]]) -> Callable[[], Iterator[bytes]]:
        def read() -> Iterator[bytes]:
            done = 0
            for chunk in opener():
                done += len(chunk)
                progress(role, done)
                yield chunk
        return read
    return dataclasses.replace(drop, data={r: counted(r, o) for r, o in drop.data.items()})


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the `ftops` command registers `add_parser` instead)."""
    parser = argparse.ArgumentParser(prog="ftops")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
