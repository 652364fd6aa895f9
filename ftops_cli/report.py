"""`ftops report RUN_ID [--out DIR] [--open]`: a run's reports (validation and evaluation, HTML and JSON)
fetched from the reports container to a folder on disk; `--open` shows the evaluation report (else the
validation report) in the browser. The pages are self-contained: they open from disk as they are.
"""
from __future__ import annotations

import argparse
import webbrowser
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ftops_cli.errors import UsageError

if TYPE_CHECKING:
    from shared.app.bootstrap import Deps

MAX_REPORT_BYTES = 64 * 1024 * 1024


def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="fetch a run's reports from storage to disk (and open one)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_id", help="the run (ftops status lists them)")
    p.add_argument("--out", type=Path, default=Path("ftops-reports"),
                   help="folder to write into; the run gets a subfolder (default ./ftops-reports)")
    p.add_argument("--open", action="store_true", help="open the evaluation (else validation) report in the browser")
    p.set_defaults(func=run)


def fetch(deps: Deps, run_id: str, out: Path) -> list[Path]:
    """Every report of the run (`reports/<run_id>/*.json|html`) written under out/<run_id>/; [] if none."""
    if not run_id or "/" in run_id or run_id in (".", ".."):
        raise UsageError(f"{run_id!r} is not a run id")
    container = deps.blobs.get_container_client(deps.settings.reports_container)
    folder = out / run_id
    written = []
    for blob in container.list_blobs(name_starts_with=f"{run_id}/"):
        name = blob.name[len(run_id) + 1:]
        if "/" in name or not name.endswith((".html", ".json")) or (blob.size or 0) > MAX_REPORT_BYTES:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        target.write_bytes(container.get_blob_client(blob.name).download_blob().readall())
        written.append(target)
    return sorted(written)


def run(args: argparse.Namespace, deps: Deps | None = None) -> int:
    if deps is None:
        from ftops_cli.target import deps as target_deps
        deps = target_deps(args)
    written = fetch(deps, args.run_id, args.out)
    if not written:
        deps.registry.require_run(args.run_id)   # an unknown run says so (exit 2); a known one has no report yet
        print(f"run {args.run_id} has no reports yet (validation writes the first)")
        return 1
    for path in written:
        print(path)
    if args.open:
        page = next((p for p in written if p.name == "evaluation.html"), None) or \
            next((p for p in written if p.suffix == ".html"), None)
        if page is not None:
            webbrowser.open(page.resolve().as_uri())
    return 0
