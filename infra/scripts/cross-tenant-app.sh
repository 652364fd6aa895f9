#!/bin/sh
# Spokes in another tenant (docs/deploy.md, "Spokes in another tenant").
#
# The app's managed identity cannot hold roles in another tenant. Instead it signs in as a multi-tenant
# app registration whose federated credential trusts the identity (no secret anywhere):
#   register          in the home tenant (the hub's): create the app, its federated credential, its
#                     service principal, and Cognitive Services OpenAI Contributor on the hub (ARM checks
#                     an auxiliary token from the hub's tenant, from the same app, on a cross-tenant deploy)
#   grant APP_ID ACCOUNT_ID
#                     signed in to the spoke's tenant: provision the app there and grant it Cognitive
#                     Services OpenAI Contributor on the spoke account (deploy + keep-alive)
# Then put APP_ID in infra/spokes.json as that target's "credential": {"client_id": APP_ID} and run
# `azd provision` (the app reads the same file).
set -eu
OPENAI_CONTRIBUTOR=a001fd3d-188f-4b5d-821b-7da978bf7442

usage() { sed -n '2,15p' "$0" >&2; exit 2; }

sp_object_id() {   # create the service principal in the signed-in tenant unless it exists
  id=$(az ad sp show --id "$1" --query id -o tsv 2>/dev/null || true)
  [ -n "$id" ] || id=$(az ad sp create --id "$1" --query id -o tsv)
  echo "$id"
}

grant_contributor() {   # principal object id, scope
  az role assignment create --assignee-object-id "$1" --assignee-principal-type ServicePrincipal \
    --role "$OPENAI_CONTRIBUTOR" --scope "$2" --output none
}

case "${1:-}" in
  register)
    : "${AZURE_TENANT_ID:?run after azd provision (azd env get-values) or export it}"
    : "${FTOPS_IDENTITY_PRINCIPAL_ID:?}" "${FTOPS_HUB_RESOURCE_ID:?}" "${AZURE_ENV_NAME:=ftops}"
    app_id=$(az ad app create --display-name "ftops-cross-tenant-${AZURE_ENV_NAME}" \
               --sign-in-audience AzureADMultipleOrgs --query appId -o tsv)
    az ad app federated-credential create --id "$app_id" --parameters "{
      \"name\": \"ftops-managed-identity\",
      \"issuer\": \"https://login.microsoftonline.com/${AZURE_TENANT_ID}/v2.0\",
      \"subject\": \"${FTOPS_IDENTITY_PRINCIPAL_ID}\",
      \"audiences\": [\"api://AzureADTokenExchange\"],
      \"description\": \"the ftops function app's user-assigned managed identity\"
    }" --output none
    grant_contributor "$(sp_object_id "$app_id")" "$FTOPS_HUB_RESOURCE_ID"
    echo "multi-tenant app: $app_id"
    echo "next, for each spoke in another tenant: az login --tenant <spoke tenant>; $0 grant $app_id <account resource id>"
    ;;
  grant)
    [ $# -eq 3 ] || usage
    grant_contributor "$(sp_object_id "$2")" "$3"
    echo "granted Cognitive Services OpenAI Contributor on $3 to app $2 in tenant $(az account show --query tenantId -o tsv)"
    ;;
  *) usage ;;
esac
