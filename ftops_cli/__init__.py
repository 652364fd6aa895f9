"""The `ftops` command: validate, demo, status, and the operator commands."""
from __future__ import annotations

import argparse
import logging
import sys
import traceback


def main(argv: list[str] | None = None) -> int:
    from ftops_cli import demo, drop, history, operate, report, status, validate, webhooks
    parser = argparse.ArgumentParser(prog="ftops", description="Fine-tuning operations for Azure OpenAI.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logs on stderr")
    parser.add_argument("--env-file", metavar="FILE", default=None,
                        help="the deployed environment to talk to: `azd env get-values` output or KEY=value app "
                             "settings (also FTOPS_ENV_FILE); default: the settings in the environment, else the "
                             "local stack `ftops demo --keep-running` runs")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in (validate, demo, status, history, drop, report, operate, webhooks):
        module.add_parser(sub)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:   # argparse exits 2 on usage errors: keep that, it is our contract too
        return int(exc.code or 0)
    logging.basicConfig(stream=sys.stderr, level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("azure").setLevel(logging.WARNING)
    logging.getLogger("httpx2").setLevel(logging.WARNING)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line that says why (traceback with -v)
        from ftops_cli.errors import explain
        line, code = explain(exc)
        print(f"ftops {args.command}: {line}", file=sys.stderr)
        if args.verbose:
            traceback.print_exc()
        return code


if __name__ == "__main__":
    sys.exit(main())
