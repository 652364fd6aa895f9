#!/bin/sh
# The operator API's app registration (docs/deploy.md, "The operator API's app registration"): created, or
# brought up to what ftops needs. azd runs it after every provision (azure.yaml's postprovision hook; the Windows
# form is app-registration.ps1), before the code is deployed; by hand, export `azd env get-values` first. Re-running
# it changes nothing once the registration is as described: every write below happens only when what Entra ID
# holds differs. With FTOPS_APP_REGISTRATION=off in the azd environment it does nothing (someone else, with the
# right to register apps, runs it later).
#   (no argument)      the app registration "ftops-operator-api-<azd env>": App ID URI api://<client id>,
#                      v2 access tokens, the delegated scope user_impersonation with the Azure CLI
#                      pre-authorised (`az login`, then `ftops approve`), app roles Approver.<env> for each
#                      environment of infra/spokes.json plus Operator and Reader, the console's redirect URI
#                      (<FTOPS_API_URL>/console/signin/callback) and a federated credential trusting the
#                      function app's managed identity (the console redeems sign-in codes with it: no secret);
#                      its service principal, with role assignment required; then its client id into the azd
#                      environment (FTOPS_OPERATOR_API_AUDIENCE, OPERATOR_API_SCOPE) and the function app's
#                      OPERATOR_API_AUDIENCE setting
#   grant USER ROLE    give a person (user principal name or object id) an app role, e.g. Approver.prod
# Needs the Azure CLI signed in to the tenant (Application Administrator or owner of the app) and jq.
set -eu

azure_cli_app_id=04b07795-8ddb-461a-bbee-02f9e1bf7b46   # Microsoft's client id of the Azure CLI
SCOPE_VALUE=user_impersonation
FEDERATED_NAME=ftops-console-managed-identity
spokes=${SPOKES_FILE:-$(dirname "$0")/../spokes.json}

usage() { sed -n '2,18p' "$0" >&2; exit 2; }
need() { command -v "$1" >/dev/null 2>&1 || { echo "app-registration: $1 is needed on PATH" >&2; exit 1; }; }
new_uuid() {
  if command -v uuidgen >/dev/null 2>&1; then uuidgen | tr '[:upper:]' '[:lower:]'
  else cat /proc/sys/kernel/random/uuid; fi
}
same_json() { [ "$(printf '%s' "$1" | jq -S .)" = "$(printf '%s' "$2" | jq -S .)" ]; }

if [ $# -eq 0 ] && [ "${FTOPS_APP_REGISTRATION:-on}" = "off" ]; then
  echo "app-registration: skipped (FTOPS_APP_REGISTRATION=off): the operator API answers 503 until someone who may"
  echo "register apps runs infra/scripts/app-registration.sh with this azd environment's values (docs/deploy.md)"
  exit 0
fi
need az
need jq
: "${AZURE_ENV_NAME:?run through azd (azd env get-values) or export it}"
name="ftops-operator-api-${AZURE_ENV_NAME}"
graph=$(az cloud show --query endpoints.microsoftGraphResourceId -o tsv)
graph=${graph%/}

app_id=$(az ad app list --display-name "$name" --query "[0].appId" -o tsv)

grant() {   # $user gets the app role $role
  [ -n "$app_id" ] || { echo "no app registration $name yet: run $0 first" >&2; exit 1; }
  user_id=$(az ad user show --id "$user" --query id -o tsv)
  role_id=$(az ad app show --id "$app_id" --query "appRoles[?value=='$role'].id | [0]" -o tsv)
  [ -n "$role_id" ] || { echo "$name has no app role $role" >&2; exit 1; }
  sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query "[0].id" -o tsv)
  held=$(az rest --method GET --uri "$graph/v1.0/servicePrincipals/$sp_id/appRoleAssignedTo" \
           --query "length(value[?principalId=='$user_id' && appRoleId=='$role_id'])" -o tsv)
  if [ "$held" != "0" ]; then echo "$user already holds $role"; return; fi
  az rest --method POST --uri "$graph/v1.0/servicePrincipals/$sp_id/appRoleAssignedTo" \
    --headers Content-Type=application/json \
    --body "{\"principalId\": \"$user_id\", \"resourceId\": \"$sp_id\", \"appRoleId\": \"$role_id\"}" --output none
  echo "granted $role to $user ($user_id)"
}

case "${1:-}" in
  grant) [ $# -eq 3 ] || usage; user=$2 role=$3; grant; exit 0 ;;
  "") ;;
  *) usage ;;
esac

: "${AZURE_TENANT_ID:?}" "${FTOPS_IDENTITY_PRINCIPAL_ID:?}" "${FTOPS_API_URL:?}"
login=$(az cloud show --query endpoints.activeDirectory -o tsv)
login=${login%/}

if [ -z "$app_id" ]; then
  app_id=$(az ad app create --display-name "$name" --sign-in-audience AzureADMyOrg --query appId -o tsv)
  echo "created the app registration $name ($app_id)"
fi
current=$(az ad app show --id "$app_id" -o json)
object_id=$(printf '%s' "$current" | jq -r .id)

# --- identifier, token version, scope, app roles, redirect URI: one PATCH, only if something differs ------
environments=$(jq -c '[.environments[].name]' "$spokes")
wanted=$(jq -n --argjson envs "$environments" '
  [($envs[] | {value: ("Approver." + .), allowedMemberTypes: ["User"],
               description: ("Approve or reject a run into " + . + "; never a run one owns, started or retrained")}),
   {value: "Operator", allowedMemberTypes: ["User", "Application"],
    description: "Start, retrain, roll back and retire runs"},
   {value: "Reader", allowedMemberTypes: ["User", "Application"], description: "Read runs, reports and deployments"}]')
fresh="[]"   # one new id for each role or scope that has none yet (existing ids are kept: assignments use them)
for _ in $(printf '%s' "$wanted" | jq -r '.[].value') scope; do
  fresh=$(printf '%s' "$fresh" | jq -c --arg id "$(new_uuid)" '. + [$id]')
done
callback="${FTOPS_API_URL%/}/console/signin/callback"
desired=$(printf '%s' "$current" | jq -c --argjson wanted "$wanted" --argjson fresh "$fresh" \
  --arg app "$app_id" --arg scope "$SCOPE_VALUE" --arg callback "$callback" '
  (.appRoles // []) as $have
  | ((.api.oauth2PermissionScopes // []) | map(select(.value == $scope)) | .[0].id) as $scope_id
  | {identifierUris: ((.identifierUris // []) + ["api://" + $app] | unique),
     api: {requestedAccessTokenVersion: 2,
           oauth2PermissionScopes: [{id: ($scope_id // $fresh[-1]), value: $scope, type: "User", isEnabled: true,
             adminConsentDisplayName: "Act on ftops as you", userConsentDisplayName: "Act on ftops as you",
             adminConsentDescription: "The ftops CLI and console call the operator API as the signed-in person",
             userConsentDescription: "The ftops CLI and console call the operator API as you"}]},
     appRoles: ([$have[] | select(.value as $v | [$wanted[].value] | index($v) | not)]
                + [$wanted | to_entries[] | .key as $i | .value | .value as $v
                   | . + {id: (([$have[] | select(.value == $v)] | .[0].id) // $fresh[$i]),
                          displayName: $v, isEnabled: true}]
                | map({allowedMemberTypes, description, displayName, id, isEnabled, value}) | sort_by(.value)),
     web: {redirectUris: ((.web.redirectUris // []) + [$callback] | unique)}}')
held=$(printf '%s' "$current" | jq -c '
  {identifierUris: (.identifierUris // [] | unique),
   api: {requestedAccessTokenVersion: .api.requestedAccessTokenVersion,
         oauth2PermissionScopes: [(.api.oauth2PermissionScopes // [])[]
           | {id, value, type, isEnabled, adminConsentDisplayName, userConsentDisplayName, adminConsentDescription,
              userConsentDescription}]},
   appRoles: ((.appRoles // []) | map({allowedMemberTypes, description, displayName, id, isEnabled, value})
              | sort_by(.value)),
   web: {redirectUris: (.web.redirectUris // [] | unique)}}')
if ! same_json "$desired" "$held"; then
  az rest --method PATCH --uri "$graph/v1.0/applications/$object_id" --headers Content-Type=application/json \
    --body "$desired" --output none
  echo "updated $name: App ID URI, v2 tokens, scope $SCOPE_VALUE, app roles, redirect URI"
  current=$(az ad app show --id "$app_id" -o json)
fi

# --- the Azure CLI pre-authorised for the scope (a second PATCH: the scope must exist first) ---------------
scope_id=$(printf '%s' "$current" | jq -r --arg s "$SCOPE_VALUE" '.api.oauth2PermissionScopes[] | select(.value == $s) | .id')
pre=$(printf '%s' "$current" | jq -c '.api.preAuthorizedApplications // []')
pre_wanted=$(printf '%s' "$pre" | jq -c --arg cli "$azure_cli_app_id" --arg id "$scope_id" '
  [.[] | select(.appId != $cli)] + [{appId: $cli, delegatedPermissionIds: [$id]}] | sort_by(.appId)')
if ! same_json "$(printf '%s' "$pre" | jq -c 'sort_by(.appId)')" "$pre_wanted"; then
  az rest --method PATCH --uri "$graph/v1.0/applications/$object_id" --headers Content-Type=application/json \
    --body "$(printf '%s' "$current" | jq -c --argjson pre "$pre_wanted" \
               '{api: {requestedAccessTokenVersion: .api.requestedAccessTokenVersion,
                       oauth2PermissionScopes: .api.oauth2PermissionScopes, preAuthorizedApplications: $pre}}')" \
    --output none
  echo "pre-authorised the Azure CLI for $SCOPE_VALUE"
fi

# --- the federated credential: the function app's managed identity is the app's only credential -----------
credential=$(jq -n --arg name "$FEDERATED_NAME" --arg issuer "$login/$AZURE_TENANT_ID/v2.0" \
  --arg subject "$FTOPS_IDENTITY_PRINCIPAL_ID" '{name: $name, issuer: $issuer, subject: $subject,
   audiences: ["api://AzureADTokenExchange"], description: "the ftops function app (console sign-in)"}')
existing=$(az ad app federated-credential list --id "$app_id" -o json |
           jq -c --arg name "$FEDERATED_NAME" '[.[] | select(.name == $name)
             | {name, issuer, subject, audiences, description}] | .[0] // empty')
if [ -z "$existing" ]; then
  az ad app federated-credential create --id "$app_id" --parameters "$credential" --output none
  echo "federated credential: the managed identity $FTOPS_IDENTITY_PRINCIPAL_ID"
elif ! same_json "$existing" "$credential"; then
  az ad app federated-credential update --id "$app_id" --federated-credential-id "$FEDERATED_NAME" \
    --parameters "$credential" --output none
  echo "federated credential updated: the managed identity $FTOPS_IDENTITY_PRINCIPAL_ID"
fi

# --- its service principal: people get tokens for the API only with a role assigned -----------------------
sp_id=$(az ad sp list --filter "appId eq '$app_id'" --query "[0].id" -o tsv)
if [ -z "$sp_id" ]; then
  sp_id=$(az ad sp create --id "$app_id" --query id -o tsv)
  echo "created its service principal ($sp_id)"
fi
if [ "$(az ad sp show --id "$app_id" --query appRoleAssignmentRequired -o tsv)" != "true" ]; then
  az ad sp update --id "$app_id" --set appRoleAssignmentRequired=true --output none
  echo "role assignment required to get a token for the API"
fi

# --- where the app and the CLI read it --------------------------------------------------------------------
set_env() {   # azd environment key, value
  key=$1 value=$2
  if command -v azd >/dev/null 2>&1; then
    [ "$(azd env get-value "$key" 2>/dev/null || true)" = "$value" ] || { azd env set "$key" "$value"; echo "azd env: $key=$value"; }
  else
    echo "$key=$value"
  fi
}
set_env FTOPS_OPERATOR_API_AUDIENCE "$app_id"
set_env OPERATOR_API_SCOPE "api://$app_id/.default"
if [ -n "${AZURE_FUNCTION_APP_NAME:-}" ] && [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
  # the first provision ran before the registration existed; later ones pass it as the parameter
  setting=$(az functionapp config appsettings list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
              --query "[?name=='OPERATOR_API_AUDIENCE'].value | [0]" -o tsv)
  if [ "$setting" != "$app_id" ]; then
    az functionapp config appsettings set -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
      --settings "OPERATOR_API_AUDIENCE=$app_id" --output none
    echo "function app setting OPERATOR_API_AUDIENCE=$app_id"
  fi
fi
echo "operator API app registration $name: $app_id (grant a role: $0 grant <user> Approver.<env>)"
