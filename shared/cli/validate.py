"""`ftops validate PATH`: check a JSONL file or a run folder before (or without) uploading it.

Exit codes: 0 accepted (warnings allowed), 1 rejected, 2 usage error or unreadable path.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO

from shared.models import UnknownModelError, known_models, model_facts
from shared.validation import DatasetReport, ValidationOptions, validate_dataset

CHUNK = 4 << 20
RUN_FILES = {"train": "train.jsonl", "validation": "validation.jsonl", "eval": "eval.jsonl"}
PROGRESS_MIN_BYTES = 32 << 20  # smaller inputs finish before a bar would help


class UsageError(Exception):
    pass


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("validate", help="validate a fine-tuning dataset (file or run folder)",
                              description=__doc__)
    p.add_argument("path", help="a JSONL file, or a run folder with train/validation/eval.jsonl")
    p.add_argument("--model", default=None, help="base model (default: run.json base_model, else gpt-4.1-mini-2025-04-14)")
    p.add_argument("--method", choices=("supervised", "dpo", "reinforcement"), default=None,
                   help="fine-tuning method (default: run.json method, else detected from the data)")
    p.add_argument("--pii", choices=("error", "warn"), default="error",
                   help="personal data is an error (default) or a warning")
    p.add_argument("--over-limit", choices=("error", "warn"), default="error",
                   help="examples over the model's token limit are an error (default) or a warning")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object on stdout")
    p.set_defaults(func=run)
    return p


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            yield chunk


def _run_settings(folder: Path) -> dict[str, Any]:
    """base_model and method from run.json, leniently: the full schema is checked elsewhere."""
    path = folder / "run.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: data[k] for k in ("base_model", "method") if isinstance(data.get(k), str)}


def _inputs(path: Path) -> tuple[dict[str, Path], dict[str, Any]]:
    if path.is_dir():
        files = {role: path / name for role, name in RUN_FILES.items() if (path / name).is_file()}
        if "train" not in files:
            raise UsageError(f"{path}: a run folder needs {RUN_FILES['train']}")
        return files, _run_settings(path)
    if not path.is_file():
        raise UsageError(f"{path}: no such file or folder")
    return {"train": path}, {}


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


def _summary(report: DatasetReport, out: TextIO) -> None:
    stats = report.stats
    tok = stats.get("tokens", {})
    per = tok.get("per_example", {})
    cost = stats.get("cost", {})
    verdict = "ACCEPTED" if report.valid else "REJECTED"
    out.write(f"{verdict}: {report.examples} examples, method {report.method or 'unknown'}, "
              f"{len(report.errors)} errors, {len(report.warnings)} warnings\n")
    several = len(report.files) > 1
    for title, findings in (("errors", report.errors), ("warnings", report.warnings)):
        if findings:
            out.write(f"\n{title}:\n")
        for f in findings:
            where = f"{f.file}:" if several and f.file else ""
            line = f"line {f.line}" if f.line is not None else "file"
            out.write(f"  {where}{line}: {f.code}: {f.message}\n")
    out.write(f"\ntokens: {tok.get('total', 0):,} total, {tok.get('assistant', 0):,} in assistant messages; "
              f"per example min {per.get('min')} / median {per.get('median')} / p95 {per.get('p95')} / "
              f"max {per.get('max')} (limit {tok.get('limit')})\n")
    if cost.get("estimated_usd") is not None:
        out.write(f"cost estimate: {cost['billed_tokens']:,} billed tokens ({cost['epochs']} epochs) x "
                  f"${cost['price_per_1m_tokens']}/1M = ~${cost['estimated_usd']:,.2f} (estimate)\n")
    elif cost.get("note"):
        out.write(f"cost: {cost['note']} (~${cost.get('price_per_hour')}/h, estimate)\n")


def run(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        files, settings = _inputs(Path(args.path))
        model = args.model or settings.get("base_model") or "gpt-4.1-mini-2025-04-14"
        method = args.method or settings.get("method")
        try:
            model_facts(model)
        except UnknownModelError:
            raise UsageError(f"unknown model {model!r}; known: {', '.join(known_models())}") from None
        options = ValidationOptions(model=model, method=method, pii=args.pii, over_limit=args.over_limit)
        for p in files.values():
            if not os.access(p, os.R_OK):
                raise UsageError(f"{p}: not readable")
    except (UsageError, ValueError) as exc:
        err.write(f"ftops validate: {exc}\n")
        return 2
    progress = _Progress({r: p.stat().st_size for r, p in files.items()}, err)
    openers: dict[str, Callable[[], Iterator[bytes]]] = {r: (lambda p=p: _chunks(p)) for r, p in files.items()}
    try:
        report = validate_dataset(openers, options=options, names={r: p.name for r, p in files.items()},
                                  progress=progress)
    except OSError as exc:
        progress.close()
        err.write(f"ftops validate: cannot read {args.path}: {exc.strerror or exc}\n")
        return 2
    progress.close()
    if args.json:
        out.write(json.dumps(report.to_dict(), ensure_ascii=False) + "\n")
    else:
        _summary(report, out)
    return 0 if report.valid else 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (the `ftops` command registers `add_parser` instead)."""
    parser = argparse.ArgumentParser(prog="ftops")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    raise SystemExit(main())
