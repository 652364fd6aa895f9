// A new hub: the Azure OpenAI resource that trains. Only when no existing hub is named (main.bicep).
// Its region must offer fine-tuning for the base models you train (docs/deploy.md, "Choosing the hub").
param name string
param location string
param tags object

resource hub 'Microsoft.CognitiveServices/accounts@2024-10-01' = {
  // checkov:skip=CKV_AZURE_134: the Flex app reaches the hub over its public endpoint, Entra ID only (local auth off); private networking is the documented next step
  name: name
  location: location
  tags: tags
  kind: 'OpenAI'
  sku: {
    name: 'S0'
  }
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    customSubDomainName: name
    disableLocalAuth: true
    publicNetworkAccess: 'Enabled'
  }
}

output id string = hub.id
output endpoint string = hub.properties.endpoint
