#!/bin/sh
# Register the app's webhook route (POST /api/hub/webhooks, functions/webhooks.py) with the hub, so fine-tuning
# jobs that end are pushed to ftops at once instead of waiting for the next poll tick (the poll timer stays the
# fallback). Run it once after the first `azd deploy`; safe to run again: an endpoint already registered for
# the app's URL is kept (its event types put right), and nothing is written when all is in place.
#
# Azure documents webhook endpoints only as REST on the resource (Learn "Azure OpenAI in Foundry Models
# webhooks": POST/GET {endpoint}/openai/v1/dashboard/webhook_endpoints, POST/DELETE .../{id}); there is no ARM
# resource or Bicep for them. The signing secret is shown once, when the endpoint is created: it is stored in
# the azd environment (FTOPS_HUB_WEBHOOK_SECRET, the Bicep's secure parameter hubWebhookSecret, so the next
# `azd provision` keeps it) and in the app setting HUB_WEBHOOK_SECRET (effective now). It is never printed.
# An endpoint whose secret the azd environment lost is deleted and created again (a new secret).
#
# Auth: Learn's samples use an `api-key`; ftops's hub has local auth off, so this script asks the Azure CLI
# for an Entra ID token for https://cognitiveservices.azure.com (what the rest of the data plane accepts);
# that the dashboard endpoints take one is not documented. Set AZURE_OPENAI_API_KEY to use a key instead.
set -eu
: "${AZURE_RESOURCE_GROUP:?run through azd (azd env get-values) or export the outputs of the azd environment}"
: "${AZURE_FUNCTION_APP_NAME:?}" "${FTOPS_HUB_ENDPOINT:?}"

api="${FTOPS_HUB_ENDPOINT%/}/openai/v1/dashboard/webhook_endpoints"
events='["fine_tuning.job.cancelled","fine_tuning.job.failed","fine_tuning.job.succeeded"]'
wanted="fine_tuning.job.cancelled,fine_tuning.job.failed,fine_tuning.job.succeeded"
host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query defaultHostName -o tsv)
url="https://${host}/api/hub/webhooks"
body="{\"name\": \"ftops\", \"url\": \"${url}\", \"event_types\": ${events}}"

# hub METHOD URL [az rest arguments...]: the hub's REST, with an Entra ID token or AZURE_OPENAI_API_KEY
hub() {
  method=$1 target=$2
  shift 2
  if [ -n "${AZURE_OPENAI_API_KEY:-}" ]; then
    az rest --method "$method" --url "$target" --skip-authorization-header \
      --headers "api-key=${AZURE_OPENAI_API_KEY}" "$@"
  else
    az rest --method "$method" --url "$target" --resource "https://cognitiveservices.azure.com" "$@"
  fi
}

existing=$(hub get "$api" --query "data[?url=='${url}'].id" -o tsv)
known=$(azd env get-value FTOPS_HUB_WEBHOOK_SECRET 2>/dev/null || true)
case "$known" in whsec_*) ;; *) known="" ;; esac

if [ -n "$existing" ] && [ -n "$known" ]; then
  id=$(printf '%s\n' "$existing" | head -n 1)
  have=$(hub get "$api" --query "data[?id=='${id}'] | [0].event_types | sort(@) | join(',', @)" -o tsv)
  if [ "$have" = "$wanted" ]; then
    echo "webhook endpoint ${id} already delivers ${wanted} to ${url}: nothing to do"
  else
    hub post "${api}/${id}" --body "$body" --output none
    echo "webhook endpoint ${id}: event types set to ${wanted}"
  fi
  exit 0
fi

for id in $existing; do
  # its secret is not in the azd environment and cannot be shown again: replaced by a new endpoint
  hub delete "${api}/${id}" --output none
  echo "deleted webhook endpoint ${id} (its signing secret was not in the azd environment)"
done
secret=$(hub post "$api" --body "$body" --query signing_secret -o tsv)
case "$secret" in
  whsec_*) ;;
  *) echo "the hub did not return a signing secret for the new endpoint; nothing stored" >&2; exit 1 ;;
esac
azd env set FTOPS_HUB_WEBHOOK_SECRET "$secret" >/dev/null
az functionapp config appsettings set -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
  --settings "HUB_WEBHOOK_SECRET=${secret}" --output none
echo "webhook endpoint registered: ${wanted} -> ${url}; its secret is in the azd environment and the app settings"
