// Cognitive Services OpenAI Contributor for one principal on one Azure OpenAI account, in whatever
// subscription and resource group the module is scoped to (main.bicep scopes it to the hub and to every
// spoke of the spokes file). It covers what ftops does there and no more: on the hub, files, fine-tuning
// jobs and temporary evaluation deployments; on a spoke, deployments (PUT/DELETE) and the keep-alive
// chat completion. It cannot change the account itself, its keys or its network.
param accountName string
param principalId string

var openAIContributor = 'a001fd3d-188f-4b5d-821b-7da978bf7442'

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource contributor 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, openAIContributor)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', openAIContributor)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
