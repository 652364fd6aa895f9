"""`ftops drop PATH [--name NAME]`: upload a dataset file or a run folder to the datasets container of the
target ftops (the local stack, or a deployed one with your own sign-in), as a data scientist would: a
folder's run.json last, since it starts the run. Intake (the blob trigger) takes it from there;
`ftops status` follows the run."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ftops_cli.errors import UsageError


def add_parser(sub: Any) -> None:
    p = sub.add_parser("drop", help="upload a .jsonl file or a run folder to the datasets container (run.json last)",
                       description=__doc__)
    p.add_argument("path", help="a .jsonl dataset, or a folder with train.jsonl (and run.json, eval.jsonl, …)")
    p.add_argument("--name", help="the name in the container (default: the file's or folder's own)")
    p.set_defaults(func=run)


def plan(path: Path, name: str | None = None) -> list[tuple[str, Path]]:
    """[(blob name, file)] in upload order; a folder without run.json, or a file that is not .jsonl, is refused."""
    if not path.exists():
        raise UsageError(f"{path}: no such file or folder")
    if path.is_file():
        if path.suffix != ".jsonl":
            raise UsageError(f"{path}: not a .jsonl file (intake would reject it as not_a_dataset); "
                             f"`ftops validate {path}` says what it is")
        blob = name or path.name
        return [(blob if blob.endswith(".jsonl") else f"{blob}.jsonl", path)]
    start = path / "run.json"
    if not start.is_file():
        raise UsageError(f"{path}/: no run.json (a folder drop starts with its run.json; add one, {{}} for the "
                         "defaults)")
    folder = (name or path.name).strip("/")
    files = sorted(f for f in path.rglob("*") if f.is_file() and f != start and not f.name.startswith("."))
    return [(f"{folder}/{f.relative_to(path).as_posix()}", f) for f in [*files, start]]


def run(args: argparse.Namespace, *, deps: Any = None) -> int:
    files = plan(Path(args.path), args.name)   # argument mistakes first: finding them needs no settings
    if deps is None:
        from ftops_cli.target import deps as target_deps
        deps = target_deps(args)
    container = deps.blobs.get_container_client(deps.settings.datasets_container)
    for blob, path in files:
        with path.open("rb") as data:
            container.upload_blob(blob, data, overwrite=True)
    start = files[-1][0]
    print(f"dropped {deps.settings.datasets_container}/{start}" + (f" ({len(files)} files, run.json last)"
                                                                  if len(files) > 1 else "")
          + "; intake starts the run (`ftops status` follows it)")
    return 0
