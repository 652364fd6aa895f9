// The function app on Flex Consumption: Python on Linux, the deployment package pulled from blob storage
// with the user-assigned identity, every app setting the code reads (and nothing Flex forbids).
param name string
param planName string
param location string
param tags object
param identityId string
param deploymentContainerUrl string
param pythonVersion string
param instanceMemoryMB int
param maximumInstanceCount int
@description('name → value of every app setting; main.bicep builds it (docs/deploy.md lists each one)')
param appSettings object

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy on Flex keeps at least two always-ready instances billed around the clock; set zoneRedundant where that is wanted (docs/deploy.md)
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    name: 'FC1'
    tier: 'FlexConsumption'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers blob events to the app's public webhook (key-protected); private networking is the documented next step
  // checkov:skip=CKV_AZURE_17: Event Grid webhooks present no client certificate; the blob webhook is protected by the blobs_extension key
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero; always-ready instances would bill around the clock for a back-office pipeline
  // checkov:skip=CKV_AZURE_213: no healthCheckPath: the app does serve HTTP (the operator API, the console and the hub's webhook receiver), but the pipeline runs on queues and timers, and Learn documents health check for App Service plans, not Flex Consumption; accepted, see docs/deploy.md
  name: name
  location: location
  tags: union(tags, { 'azd-service-name': 'ftops' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    publicNetworkAccess: 'Enabled'
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: [for s in items(appSettings): {
        name: s.key
        value: s.value
      }]
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: deploymentContainerUrl
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: {
        name: 'python'
        version: pythonVersion
      }
    }
  }
}

output name string = site.name
output defaultHostName string = site.properties.defaultHostName
