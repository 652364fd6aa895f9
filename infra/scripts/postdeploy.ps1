# The Windows form of postdeploy.sh (azure.yaml runs one or the other; the comments there say why this runs
# after deployment). Same az calls, same arguments.
$ErrorActionPreference = 'Stop'
foreach ($name in 'AZURE_RESOURCE_GROUP', 'AZURE_FUNCTION_APP_NAME', 'AZURE_EVENTGRID_SYSTEM_TOPIC',
                  'FTOPS_DATASETS_CONTAINER', 'FTOPS_INTAKE_FUNCTION', 'FTOPS_STORAGE_ACCOUNT_ID',
                  'FTOPS_DEADLETTER_CONTAINER') {
    if (-not [Environment]::GetEnvironmentVariable($name)) {
        throw "$name is not set: run through azd (azd deploy) or export the outputs of the azd environment"
    }
}

$key = ''
foreach ($attempt in 1..12) {
    # the key appears once the host has started with the blob trigger; it is never printed
    $key = az functionapp keys list -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME `
        --query "systemKeys.blobs_extension" -o tsv 2>$null
    if ($key) { break }
    Write-Output "waiting for the blobs_extension key (attempt $attempt of 12)..."
    Start-Sleep -Seconds 10
}
if (-not $key) {
    [Console]::Error.WriteLine("the function app has no blobs_extension key yet: is the intake function deployed? run this script again")
    exit 1
}

$appHost = az functionapp show -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME --query defaultHostName -o tsv
$endpoint = "https://$appHost/runtime/webhooks/blobs?functionName=Host.Functions.$($env:FTOPS_INTAKE_FUNCTION)&code=$key"

az eventgrid system-topic event-subscription create `
  --resource-group $env:AZURE_RESOURCE_GROUP `
  --system-topic-name $env:AZURE_EVENTGRID_SYSTEM_TOPIC `
  --name ftops-intake `
  --endpoint-type webhook `
  --endpoint $endpoint `
  --included-event-types Microsoft.Storage.BlobCreated `
  --subject-begins-with "/blobServices/default/containers/$($env:FTOPS_DATASETS_CONTAINER)/" `
  --event-delivery-schema EventGridSchema `
  --max-delivery-attempts 30 `
  --event-ttl 1440 `
  --deadletter-identity systemassigned `
  --deadletter-identity-endpoint "$($env:FTOPS_STORAGE_ACCOUNT_ID)/blobServices/default/containers/$($env:FTOPS_DEADLETTER_CONTAINER)" `
  --output none
if ($LASTEXITCODE -ne 0) { exit $LASTEXITCODE }
Write-Output "Event Grid subscription ftops-intake: BlobCreated under $($env:FTOPS_DATASETS_CONTAINER)/ -> $($env:FTOPS_INTAKE_FUNCTION) (dead letters: $($env:FTOPS_DEADLETTER_CONTAINER)/)"
