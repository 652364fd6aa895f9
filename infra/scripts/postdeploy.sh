#!/bin/sh
# After the code is deployed: subscribe the intake function's blob webhook to BlobCreated events under the
# datasets container. This cannot be in Bicep: the webhook needs the host's `blobs_extension` system key,
# which exists only once the blob trigger has been deployed, and Event Grid validates the endpoint when the
# subscription is created. Safe to run again (create-or-update). Needs the Azure CLI, signed in.
# Events Event Grid gives up on (after 30 attempts or 24 hours) are dead-lettered to the dead-letter container
# with the system topic's own identity (shared keys are off); the reconcile timer picks the drops up again.
set -eu
: "${AZURE_RESOURCE_GROUP:?run through azd (azd deploy) or export the outputs of the azd environment}"
: "${AZURE_FUNCTION_APP_NAME:?}" "${AZURE_EVENTGRID_SYSTEM_TOPIC:?}" "${FTOPS_DATASETS_CONTAINER:?}" "${FTOPS_INTAKE_FUNCTION:?}"
: "${FTOPS_STORAGE_ACCOUNT_ID:?}" "${FTOPS_DEADLETTER_CONTAINER:?}"

key=""
for attempt in 1 2 3 4 5 6 7 8 9 10 11 12; do
  # the key appears once the host has started with the blob trigger; it is never printed
  key=$(az functionapp keys list -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" \
        --query "systemKeys.blobs_extension" -o tsv 2>/dev/null || true)
  [ -n "$key" ] && break
  echo "waiting for the blobs_extension key (attempt $attempt of 12)..."
  sleep 10
done
if [ -z "$key" ]; then
  echo "the function app has no blobs_extension key yet: is the intake function deployed? run this script again" >&2
  exit 1
fi

host=$(az functionapp show -g "$AZURE_RESOURCE_GROUP" -n "$AZURE_FUNCTION_APP_NAME" --query defaultHostName -o tsv)
endpoint="https://${host}/runtime/webhooks/blobs?functionName=Host.Functions.${FTOPS_INTAKE_FUNCTION}&code=${key}"

az eventgrid system-topic event-subscription create \
  --resource-group "$AZURE_RESOURCE_GROUP" \
  --system-topic-name "$AZURE_EVENTGRID_SYSTEM_TOPIC" \
  --name ftops-intake \
  --endpoint-type webhook \
  --endpoint "$endpoint" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/${FTOPS_DATASETS_CONTAINER}/" \
  --event-delivery-schema EventGridSchema \
  --max-delivery-attempts 30 \
  --event-ttl 1440 \
  --deadletter-identity systemassigned \
  --deadletter-identity-endpoint "${FTOPS_STORAGE_ACCOUNT_ID}/blobServices/default/containers/${FTOPS_DEADLETTER_CONTAINER}" \
  --output none
echo "Event Grid subscription ftops-intake: BlobCreated under ${FTOPS_DATASETS_CONTAINER}/ -> ${FTOPS_INTAKE_FUNCTION} (dead letters: ${FTOPS_DEADLETTER_CONTAINER}/)"
