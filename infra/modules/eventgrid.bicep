// The Event Grid system topic on the storage account. Its subscription (BlobCreated under the datasets
// container → the intake function's blob webhook) is created by infra/scripts/postdeploy.sh: the webhook
// needs the host's blobs_extension key, which exists only once the code is deployed, and Event Grid
// validates the endpoint when the subscription is created.
//
// Events Event Grid cannot deliver (30 attempts or 24 hours, postdeploy.sh) are dead-lettered into a container
// of the same account. Shared keys are off there, so Event Grid writes them with the topic's own identity,
// which may write that one container and nothing else.
param name string
param location string
param tags object
param storageAccountName string
param deadLetterContainer string

var blobDataContributor = 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'

resource account 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource deadLetters 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  name: '${storageAccountName}/default/${deadLetterContainer}'
}

resource topic 'Microsoft.EventGrid/systemTopics@2022-06-15' = {
  name: name
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: account.id
    topicType: 'Microsoft.Storage.StorageAccounts'
  }
}

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(deadLetters.id, name, blobDataContributor)
  scope: deadLetters
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', blobDataContributor)
    principalId: topic.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output name string = topic.name
