#!/bin/sh
# Spokes in another tenant (docs/deploy.md, "Spokes in another tenant").
#
# The app's managed identity cannot hold roles in another tenant. Instead it signs in as a multi-tenant
# app registration whose federated credential trusts the identity (no secret anywhere):
#   register          in the home tenant (the hub's): create the app, its federated credential, its
#                     service principal, and Cognitive Services OpenAI Contributor on the hub (ARM checks
#                     an auxiliary token from the hub's tenant, from the same app, on a cross-tenant deploy);
#                     each only if missing
#   grant APP_ID ACCOUNT_ID
#                     signed in to the spoke's tenant: provision the app there, create or update the custom
#                     spoke role of infra/spoke-role.json in the spoke's subscription, and assign it to the app
#                     on the spoke account only; where an environment of infra/spokes.json listing that account
#                     harvests its stored completions across tenants, the harvest role too
#                     (infra/spoke-harvest-role.json). Re-running it changes nothing.
# Then put APP_ID in infra/spokes.json as that target's "credential": {"client_id": APP_ID} and run
# `azd provision` (the app reads the same file). Needs the Azure CLI and, for grant, jq.
set -eu
OPENAI_CONTRIBUTOR=a001fd3d-188f-4b5d-821b-7da978bf7442   # on the hub only (never on a spoke)
here=$(dirname "$0")
spokes=${SPOKES_FILE:-$here/../spokes.json}

usage() { sed -n '2,17p' "$0" >&2; exit 2; }

sp_object_id() {   # create the service principal in the signed-in tenant unless it exists
  id=$(az ad sp show --id "$1" --query id -o tsv 2>/dev/null || true)
  [ -n "$id" ] || id=$(az ad sp create --id "$1" --query id -o tsv)
  echo "$id"
}

grant_contributor() {   # principal object id, scope
  az role assignment create --assignee-object-id "$1" --assignee-principal-type ServicePrincipal \
    --role "$OPENAI_CONTRIBUTOR" --scope "$2" --output none
}

custom_role() {   # role file, role name, subscription scope → the role's GUID, created or brought up to date
  file=$1 role_name=$2 subscription_scope=$3
  found=$(az role definition list --custom-role-only true --name "$role_name" --scope "$subscription_scope" -o json)
  if [ "$(printf '%s' "$found" | jq length)" = "0" ]; then
    az role definition create --role-definition "$(jq -c --arg name "$role_name" --arg scope "$subscription_scope" \
      '{Name: $name, Description: .description, Actions: .actions, NotActions: [], DataActions: .dataActions,
        NotDataActions: [], AssignableScopes: [$scope]}' "$file")" --query name -o tsv
    echo "created the custom role '$role_name' in $subscription_scope" >&2
    return
  fi
  # the actions are exactly the file's (a role from an older ftops gains or loses some); other scopes are kept
  held=$(printf '%s' "$found" | jq -c '.[0] | {actions: (.permissions[0].actions | sort),
         dataActions: (.permissions[0].dataActions | sort), scopes: (.assignableScopes | sort)}')
  wanted=$(jq -c --argjson held "$held" --arg scope "$subscription_scope" '{actions: (.actions | sort),
           dataActions: (.dataActions | sort), scopes: ($held.scopes + [$scope] | unique)}' "$file")
  if [ "$held" != "$wanted" ]; then
    az role definition update --role-definition "$(printf '%s' "$found" | jq -c --argjson w "$wanted" \
      --arg description "$(jq -r .description "$file")" '.[0] | {id, name, roleName, description: $description,
        actions: $w.actions, notActions: [], dataActions: $w.dataActions, notDataActions: [],
        assignableScopes: $w.scopes}')" --output none
    echo "updated the custom role '$role_name' to infra/$(basename "$file")" >&2
  fi
  printf '%s' "$found" | jq -r '.[0].name'
}

assign_once() {   # principal object id, role GUID, scope
  principal=$1 role_guid=$2 scope=$3
  held=$(az role assignment list --assignee "$principal" --role "$role_guid" --scope "$scope" --query "length(@)" -o tsv)
  [ "$held" = "0" ] || return 0
  az role assignment create --assignee-object-id "$principal" --assignee-principal-type ServicePrincipal \
    --role "$role_guid" --scope "$scope" --output none
  echo "assigned role $role_guid on $scope to $principal"
}

case "${1:-}" in
  register)
    : "${AZURE_TENANT_ID:?run after azd provision (azd env get-values) or export it}"
    : "${FTOPS_IDENTITY_PRINCIPAL_ID:?}" "${FTOPS_HUB_RESOURCE_ID:?}" "${AZURE_ENV_NAME:=ftops}"
    display_name="ftops-cross-tenant-${AZURE_ENV_NAME}"
    app_id=$(az ad app list --display-name "$display_name" --query "[0].appId" -o tsv)
    [ -n "$app_id" ] || app_id=$(az ad app create --display-name "$display_name" \
                                   --sign-in-audience AzureADMultipleOrgs --query appId -o tsv)
    has_credential=$(az ad app federated-credential list --id "$app_id" \
                       --query "length([?name=='ftops-managed-identity'])" -o tsv)
    [ "$has_credential" != "0" ] || az ad app federated-credential create --id "$app_id" --parameters "{
      \"name\": \"ftops-managed-identity\",
      \"issuer\": \"https://login.microsoftonline.com/${AZURE_TENANT_ID}/v2.0\",
      \"subject\": \"${FTOPS_IDENTITY_PRINCIPAL_ID}\",
      \"audiences\": [\"api://AzureADTokenExchange\"],
      \"description\": \"the ftops function app's user-assigned managed identity\"
    }" --output none
    hub_principal=$(sp_object_id "$app_id")
    held=$(az role assignment list --assignee "$hub_principal" --role "$OPENAI_CONTRIBUTOR" \
             --scope "$FTOPS_HUB_RESOURCE_ID" --query "length(@)" -o tsv)
    [ "$held" != "0" ] || grant_contributor "$hub_principal" "$FTOPS_HUB_RESOURCE_ID"
    echo "multi-tenant app: $app_id"
    echo "next, for each spoke in another tenant: az login --tenant <spoke tenant>; $0 grant $app_id <account resource id>"
    ;;
  grant)
    [ $# -eq 3 ] || usage
    command -v jq >/dev/null 2>&1 || { echo "cross-tenant-app: jq is needed on PATH" >&2; exit 1; }
    app_id=$2 account=$3 env_name=${AZURE_ENV_NAME:-ftops}
    # /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>
    parts=$(jq -rn --arg id "$account" '$id | ascii_downcase | split("/")
      | if length == 9 and .[1] == "subscriptions" and .[3] == "resourcegroups"
           and .[5] == "providers" and .[6] == "microsoft.cognitiveservices" and .[7] == "accounts"
        then "\(.[2]) \(.[4]) \(.[8])" else empty end')
    [ -n "$parts" ] || { echo "not an Azure OpenAI account resource id: $account" >&2; exit 2; }
    read -r sub rg name <<IDS
$parts
IDS
    subscription_scope="/subscriptions/$sub"
    principal=$(sp_object_id "$app_id")
    # one role per ftops environment and subscription: role names are unique in a tenant, and a role is kept
    # assignable only where it is used
    role_guid=$(custom_role "$here/../spoke-role.json" "ftops spoke deployer ($env_name, $sub)" "$subscription_scope")
    assign_once "$principal" "$role_guid" "$account"
    # the harvest's right to read stored completions, only where an environment listing this account harvests them
    # from another tenant (shared/run/topology.py: harvest.sources, by default both; harvest.cross_tenant)
    harvested=$(jq -r --arg sub "$sub" --arg rg "$rg" --arg name "$name" '
      [.environments[] | select(any(.targets[]; (.subscription | ascii_downcase) == $sub
                                   and (.resource_group | ascii_downcase) == $rg and (.account | ascii_downcase) == $name))
       | select(.harvest != null and (.harvest.cross_tenant // false)
                and ((.harvest.sources // ["stored_completions", "traffic"]) | index("stored_completions")) != null)]
      | length' "$spokes")
    if [ "$harvested" != "0" ]; then
      harvest_guid=$(custom_role "$here/../spoke-harvest-role.json" "ftops spoke harvester ($env_name, $sub)" \
                     "$subscription_scope")
      assign_once "$principal" "$harvest_guid" "$account"
    fi
    old=$(az role assignment list --assignee "$principal" --role "$OPENAI_CONTRIBUTOR" --scope "$account" \
            --query "length(@)" -o tsv)
    if [ "$old" != "0" ]; then
      echo "an older ftops granted Cognitive Services OpenAI Contributor here; the custom role replaces it. Remove it with:"
      echo "  az role assignment delete --assignee $principal --role $OPENAI_CONTRIBUTOR --scope $account"
    fi
    echo "app $app_id holds the ftops spoke role on $account in tenant $(az account show --query tenantId -o tsv)"
    ;;
  *) usage ;;
esac
