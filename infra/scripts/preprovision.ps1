# The Windows form of preprovision.sh (azure.yaml runs one or the other): refuse to provision with the example
# spokes file (docs/deploy.md, "The spokes file").
$ErrorActionPreference = 'Stop'
$spokes = Join-Path $PSScriptRoot '..' 'spokes.json'
if (Select-String -Path $spokes -Pattern 'REPLACE-' -SimpleMatch -Quiet) {
    [Console]::Error.WriteLine("infra/spokes.json still holds example values (REPLACE-...): list your environments and spoke")
    [Console]::Error.WriteLine("accounts there first (docs/deploy.md, 'The spokes file').")
    exit 1
}
