"""`ftops webhooks list [--json]` and `ftops webhooks register --url URL --secret-file FILE [--new-secret]`:
the hub's webhook endpoints (Learn: REST only, `/openai/v1/dashboard/webhook_endpoints`), with the hub settings
of the target (`--env-file`, the environment, or the local stack).

`register` is idempotent: an endpoint already there for URL is kept (its event types put right) and no secret
is made; a new endpoint's `whsec_` secret, shown by the hub only once, is written to FILE (mode 0600), never
printed: put it in the app setting HUB_WEBHOOK_SECRET. `--new-secret` replaces the endpoint to get a new one.
In Azure, infra/scripts/register-webhook.sh does the same and stores the secret itself.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from ftops_cli.errors import UsageError
from ftops_cli.views import table


def add_parser(sub: Any) -> None:
    p = sub.add_parser("webhooks", help="the hub's webhook endpoints: list them, register the app's route",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, help="list or register")
    listing = actions.add_parser("list", help="the hub's webhook endpoints (no secrets: the hub shows them once)")
    listing.add_argument("--json", action="store_true", help="one JSON object on stdout")
    listing.set_defaults(func=run_list)
    reg = actions.add_parser("register", help="register URL for the fine-tuning job events (idempotent)")
    reg.add_argument("--url", required=True, help="the app's webhook route, https://<app>/api/hub/webhooks")
    reg.add_argument("--secret-file", required=True, type=Path,
                     help="where a new endpoint's signing secret is written (mode 0600; never printed)")
    reg.add_argument("--new-secret", action="store_true",
                     help="replace an endpoint already registered for URL, to get a new secret")
    reg.set_defaults(func=run_register)


def _deps(args: argparse.Namespace, deps: Any) -> Any:
    if deps is None:
        from ftops_cli.target import deps as target_deps
        deps = target_deps(args)
    return deps


def run_list(args: argparse.Namespace, *, deps: Any = None) -> int:
    from shared.azure.webhook_endpoints import list_endpoints
    endpoints = list_endpoints(_deps(args, deps))
    if args.json:
        print(json.dumps({"endpoints": endpoints}, indent=2))
        return 0
    if not endpoints:
        print("no webhook endpoints on the hub: the poll timer alone follows the jobs")
        return 0
    print("\n".join(table(["ID", "NAME", "URL", "EVENT TYPES"],
                          [[str(e.get("id")), str(e.get("name")), str(e.get("url")),
                            ", ".join(e.get("event_types") or [])]
                           for e in endpoints])))
    return 0


def run_register(args: argparse.Namespace, *, deps: Any = None) -> int:
    from shared.azure.webhook_endpoints import register
    if not args.url.startswith(("https://", "http://127.0.0.1", "http://localhost")):
        raise UsageError(f"--url {args.url}: the hub delivers only to https URLs")
    if not args.secret_file.parent.is_dir():
        raise UsageError(f"--secret-file {args.secret_file}: no such folder")
    done = register(_deps(args, deps), args.url, new_secret=args.new_secret)
    if done.secret:
        fd = os.open(args.secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(done.secret)
        print(f"webhook endpoint {done.endpoint_id} {done.outcome} for {done.url}; its signing secret is in "
              f"{args.secret_file}: set it as the app setting HUB_WEBHOOK_SECRET")
    else:
        print(f"webhook endpoint {done.endpoint_id} {done.outcome} for {done.url} (its secret is the one set "
              "when it was created; --new-secret makes a new one)")
    return 0
