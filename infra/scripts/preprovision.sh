#!/bin/sh
# Refuse to provision with the example spokes file: its role assignments would point at nothing, and the
# app would stop at start-up on tenants it cannot reach (docs/deploy.md, "The spokes file").
set -eu
spokes="$(dirname "$0")/../spokes.json"
if grep -q 'REPLACE-' "$spokes"; then
  echo "infra/spokes.json still holds example values (REPLACE-...): list your environments and spoke" >&2
  echo "accounts there first (docs/deploy.md, 'The spokes file')." >&2
  exit 1
fi
