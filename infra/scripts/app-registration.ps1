# The Windows form of app-registration.sh (azure.yaml runs one or the other after every provision; the header of
# app-registration.sh says what it creates and why). Same az and azd calls, same arguments, same azd environment
# keys; JSON is shaped with ConvertFrom-Json/ConvertTo-Json instead of jq, and JSON bodies go to az as @file (az.cmd
# receives its arguments through cmd.exe, which strips the double quotes inside inline JSON).
#   ./app-registration.ps1                       create or update the registration (nothing changes on a re-run)
#   ./app-registration.ps1 grant USER ROLE       give a person an app role, e.g. Approver.prod
# Not run on the machines this is built on (no PowerShell there): parsed and compared with app-registration.sh
# call by call in make test (docs/deploy.md, "Hooks on Windows and POSIX").
#Requires -Version 7.0
param([string]$Command = '', [string]$User = '', [string]$Role = '')
$ErrorActionPreference = 'Stop'
$PSNativeCommandUseErrorActionPreference = $true   # a failing az stops the script, like `set -e`

$AzureCliAppId = '04b07795-8ddb-461a-bbee-02f9e1bf7b46'   # Microsoft's client id of the Azure CLI
$ScopeValue = 'user_impersonation'
$FederatedName = 'ftops-console-managed-identity'
$spokes = if ($env:SPOKES_FILE) { $env:SPOKES_FILE } else { Join-Path $PSScriptRoot '..' 'spokes.json' }

function Usage { Get-Content $PSCommandPath -TotalCount 6 | Select-Object -Skip 4 | Write-Host; exit 2 }
function New-Uuid { [guid]::NewGuid().ToString() }
function ConvertTo-Canonical($Value) {   # keys sorted at every level, so that two JSON values compare as text
    if ($Value -is [System.Collections.IDictionary]) {
        $sorted = [ordered]@{}
        foreach ($key in ($Value.Keys | Sort-Object -CaseSensitive)) { $sorted[$key] = ConvertTo-Canonical $Value[$key] }
        return $sorted
    }
    if ($Value -is [System.Collections.IList]) { return , @($Value | ForEach-Object { ConvertTo-Canonical $_ }) }
    return $Value
}
function Same-Json($A, $B) {
    (ConvertTo-Json -InputObject (ConvertTo-Canonical $A) -Depth 32 -Compress) -ceq
    (ConvertTo-Json -InputObject (ConvertTo-Canonical $B) -Depth 32 -Compress)
}
function Write-JsonFile($Value) {   # a temporary file holding the value as JSON, for az's @file arguments
    $file = New-TemporaryFile
    ConvertTo-Json -InputObject $Value -Depth 32 -Compress | Set-Content -Path $file.FullName -NoNewline
    return $file.FullName
}
function Unique-Sorted($Items) { return , @($Items | Where-Object { $_ } | Sort-Object -Unique -CaseSensitive) }

if (-not $Command -and $env:FTOPS_APP_REGISTRATION -eq 'off') {
    Write-Output "app-registration: skipped (FTOPS_APP_REGISTRATION=off): the operator API answers 503 until someone who may"
    Write-Output "register apps runs infra/scripts/app-registration.ps1 with this azd environment's values (docs/deploy.md)"
    exit 0
}
if (-not (Get-Command az -ErrorAction SilentlyContinue)) { throw 'app-registration: az is needed on PATH' }
if (-not $env:AZURE_ENV_NAME) { throw 'AZURE_ENV_NAME: run through azd (azd env get-values) or set it' }
$name = "ftops-operator-api-$($env:AZURE_ENV_NAME)"
$graph = az cloud show --query endpoints.microsoftGraphResourceId -o tsv
$graph = $graph.TrimEnd('/')

$appId = az ad app list --display-name $name --query "[0].appId" -o tsv

function Grant {   # $User gets the app role $Role
    if (-not $appId) { throw "no app registration $name yet: run $PSCommandPath first" }
    $userId = az ad user show --id $User --query id -o tsv
    $roleId = az ad app show --id $appId --query "appRoles[?value=='$Role'].id | [0]" -o tsv
    if (-not $roleId) { throw "$name has no app role $Role" }
    $spId = az ad sp list --filter "appId eq '$appId'" --query "[0].id" -o tsv
    $held = az rest --method GET --uri "$graph/v1.0/servicePrincipals/$spId/appRoleAssignedTo" `
        --query "length(value[?principalId=='$userId' && appRoleId=='$roleId'])" -o tsv
    if ($held -ne '0') { Write-Output "$User already holds $Role"; return }
    $body = Write-JsonFile @{ principalId = $userId; resourceId = $spId; appRoleId = $roleId }
    az rest --method POST --uri "$graph/v1.0/servicePrincipals/$spId/appRoleAssignedTo" `
        --headers Content-Type=application/json `
        --body "@$body" --output none
    Write-Output "granted $Role to $User ($userId)"
}

switch ($Command) {
    'grant' { if (-not ($User -and $Role)) { Usage }; Grant; exit 0 }
    '' { }
    default { Usage }
}

foreach ($required in 'AZURE_TENANT_ID', 'FTOPS_IDENTITY_PRINCIPAL_ID', 'FTOPS_API_URL') {
    if (-not [Environment]::GetEnvironmentVariable($required)) { throw "$required is not set: run through azd" }
}
$login = az cloud show --query endpoints.activeDirectory -o tsv
$login = $login.TrimEnd('/')

if (-not $appId) {
    $appId = az ad app create --display-name $name --sign-in-audience AzureADMyOrg --query appId -o tsv
    Write-Output "created the app registration $name ($appId)"
}
$current = az ad app show --id $appId -o json | ConvertFrom-Json -AsHashtable
$objectId = $current.id

# --- identifier, token version, scope, app roles, redirect URI: one PATCH, only if something differs ------
$environments = @((Get-Content $spokes -Raw | ConvertFrom-Json -AsHashtable).environments | ForEach-Object { $_.name })
$wanted = @($environments | ForEach-Object {
        [ordered]@{ value = "Approver.$_"; allowedMemberTypes = @('User')
            description = "Approve or reject a run into $_; never a run one owns, started or retrained" } })
$wanted += [ordered]@{ value = 'Operator'; allowedMemberTypes = @('User', 'Application')
    description = 'Start, retrain, roll back and retire runs' }
$wanted += [ordered]@{ value = 'Reader'; allowedMemberTypes = @('User', 'Application')
    description = 'Read runs, reports and deployments' }
$haveRoles = @($current.appRoles | Where-Object { $_ })
$haveScopes = @($current.api.oauth2PermissionScopes | Where-Object { $_ })
$scopeId = ($haveScopes | Where-Object { $_.value -ceq $ScopeValue } | Select-Object -First 1).id
if (-not $scopeId) { $scopeId = New-Uuid }   # existing ids are kept: assignments and consents use them
$callback = "$($env:FTOPS_API_URL.TrimEnd('/'))/console/signin/callback"
function Select-Role($r) {
    [ordered]@{ allowedMemberTypes = @($r.allowedMemberTypes); description = $r.description
        displayName = $r.displayName; id = $r.id; isEnabled = $r.isEnabled; value = $r.value }
}
$wantedValues = @($wanted | ForEach-Object { $_.value })
$roles = @($haveRoles | Where-Object { $wantedValues -cnotcontains $_.value } | ForEach-Object { Select-Role $_ })
foreach ($w in $wanted) {
    $id = ($haveRoles | Where-Object { $_.value -ceq $w.value } | Select-Object -First 1).id
    if (-not $id) { $id = New-Uuid }
    $roles += Select-Role ([ordered]@{ allowedMemberTypes = $w.allowedMemberTypes; description = $w.description
            displayName = $w.value; id = $id; isEnabled = $true; value = $w.value })
}
$desired = [ordered]@{
    identifierUris = Unique-Sorted (@($current.identifierUris) + "api://$appId")
    api            = [ordered]@{ requestedAccessTokenVersion = 2; oauth2PermissionScopes = @([ordered]@{
                id = $scopeId; value = $ScopeValue; type = 'User'; isEnabled = $true
                adminConsentDisplayName = 'Act on ftops as you'; userConsentDisplayName = 'Act on ftops as you'
                adminConsentDescription = 'The ftops CLI and console call the operator API as the signed-in person'
                userConsentDescription = 'The ftops CLI and console call the operator API as you' }) }
    appRoles       = @($roles | Sort-Object { $_.value } -CaseSensitive)
    web            = [ordered]@{ redirectUris = Unique-Sorted (@($current.web.redirectUris) + $callback) }
}
$held = [ordered]@{
    identifierUris = Unique-Sorted $current.identifierUris
    api            = [ordered]@{ requestedAccessTokenVersion = $current.api.requestedAccessTokenVersion
        oauth2PermissionScopes = @($haveScopes | ForEach-Object { [ordered]@{ id = $_.id; value = $_.value
                    type = $_.type; isEnabled = $_.isEnabled; adminConsentDisplayName = $_.adminConsentDisplayName
                    userConsentDisplayName = $_.userConsentDisplayName
                    adminConsentDescription = $_.adminConsentDescription
                    userConsentDescription = $_.userConsentDescription } }) }
    appRoles       = @($haveRoles | ForEach-Object { Select-Role $_ } | Sort-Object { $_.value } -CaseSensitive)
    web            = [ordered]@{ redirectUris = Unique-Sorted $current.web.redirectUris }
}
if (-not (Same-Json $desired $held)) {
    $body = Write-JsonFile $desired
    az rest --method PATCH --uri "$graph/v1.0/applications/$objectId" --headers Content-Type=application/json `
        --body "@$body" --output none
    Write-Output "updated ${name}: App ID URI, v2 tokens, scope $ScopeValue, app roles, redirect URI"
    $current = az ad app show --id $appId -o json | ConvertFrom-Json -AsHashtable
}

# --- the Azure CLI pre-authorised for the scope (a second PATCH: the scope must exist first) ---------------
$scopeId = ($current.api.oauth2PermissionScopes | Where-Object { $_.value -ceq $ScopeValue } | Select-Object -First 1).id
$pre = @($current.api.preAuthorizedApplications | Where-Object { $_ })
$preWanted = @(@($pre | Where-Object { $_.appId -cne $AzureCliAppId }) +
    [ordered]@{ appId = $AzureCliAppId; delegatedPermissionIds = @($scopeId) } | Sort-Object { $_.appId } -CaseSensitive)
if (-not (Same-Json @($pre | Sort-Object { $_.appId } -CaseSensitive) $preWanted)) {
    $body = Write-JsonFile @{ api = @{ requestedAccessTokenVersion = $current.api.requestedAccessTokenVersion
            oauth2PermissionScopes = @($current.api.oauth2PermissionScopes); preAuthorizedApplications = $preWanted } }
    az rest --method PATCH --uri "$graph/v1.0/applications/$objectId" --headers Content-Type=application/json `
        --body "@$body" `
        --output none
    Write-Output "pre-authorised the Azure CLI for $ScopeValue"
}

# --- the federated credential: the function app's managed identity is the app's only credential -----------
$credential = [ordered]@{ name = $FederatedName; issuer = "$login/$($env:AZURE_TENANT_ID)/v2.0"
    subject = $env:FTOPS_IDENTITY_PRINCIPAL_ID; audiences = @('api://AzureADTokenExchange')
    description = 'the ftops function app (console sign-in)' }
$existing = az ad app federated-credential list --id $appId -o json | ConvertFrom-Json -AsHashtable |
    Where-Object { $_.name -ceq $FederatedName } | Select-Object -First 1
if (-not $existing) {
    $parameters = Write-JsonFile $credential
    az ad app federated-credential create --id $appId --parameters "@$parameters" --output none
    Write-Output "federated credential: the managed identity $($env:FTOPS_IDENTITY_PRINCIPAL_ID)"
}
elseif (-not (Same-Json ([ordered]@{ name = $existing.name; issuer = $existing.issuer; subject = $existing.subject
                audiences = @($existing.audiences); description = $existing.description }) $credential)) {
    $parameters = Write-JsonFile $credential
    az ad app federated-credential update --id $appId --federated-credential-id $FederatedName `
        --parameters "@$parameters" --output none
    Write-Output "federated credential updated: the managed identity $($env:FTOPS_IDENTITY_PRINCIPAL_ID)"
}

# --- its service principal: people get tokens for the API only with a role assigned -----------------------
$spId = az ad sp list --filter "appId eq '$appId'" --query "[0].id" -o tsv
if (-not $spId) {
    $spId = az ad sp create --id $appId --query id -o tsv
    Write-Output "created its service principal ($spId)"
}
if ((az ad sp show --id $appId --query appRoleAssignmentRequired -o tsv) -ne 'true') {
    az ad sp update --id $appId --set appRoleAssignmentRequired=true --output none
    Write-Output 'role assignment required to get a token for the API'
}

# --- where the app and the CLI read it --------------------------------------------------------------------
function Set-Env($Key, $Value) {   # azd environment key, value
    if (Get-Command azd -ErrorAction SilentlyContinue) {
        $now = try { azd env get-value $Key 2>$null } catch { '' }
        if ($now -ne $Value) { azd env set $Key $Value; Write-Output "azd env: $Key=$Value" }
    }
    else {
        Write-Output "$Key=$Value"
    }
}
Set-Env FTOPS_OPERATOR_API_AUDIENCE $appId
Set-Env OPERATOR_API_SCOPE "api://$appId/.default"
if ($env:AZURE_FUNCTION_APP_NAME -and $env:AZURE_RESOURCE_GROUP) {
    # the first provision ran before the registration existed; later ones pass it as the parameter
    $setting = az functionapp config appsettings list -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME `
        --query "[?name=='OPERATOR_API_AUDIENCE'].value | [0]" -o tsv
    if ($setting -ne $appId) {
        az functionapp config appsettings set -g $env:AZURE_RESOURCE_GROUP -n $env:AZURE_FUNCTION_APP_NAME `
            --settings "OPERATOR_API_AUDIENCE=$appId" --output none
        Write-Output "function app setting OPERATOR_API_AUDIENCE=$appId"
    }
}
Write-Output "operator API app registration ${name}: $appId (grant a role: $PSCommandPath grant <user> Approver.<env>)"
