// One role for one principal on one Azure OpenAI account, in whatever subscription and resource group the module
// is scoped to. main.bicep scopes it to the hub (Cognitive Services OpenAI Contributor: files, fine-tuning jobs,
// temporary evaluation deployments) and, through spokes.bicep, to every spoke of the spokes file (the custom
// spoke role of infra/spoke-role.json: deployments and chat only). docs/deploy.md, "Roles".
param accountName string
param principalId string
@description('GUID of the role definition (built-in or custom) to assign')
param roleGuid string

resource account 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = {
  name: accountName
}

resource assignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(account.id, principalId, roleGuid)
  scope: account
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
