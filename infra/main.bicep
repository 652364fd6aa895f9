// ftops on Azure: `azd up` creates one resource group with the app and what it needs, and grants the
// app's identity its roles on the hub and on every spoke listed in infra/spokes.json (the same file the
// app reads as SPOKES_CONFIG, so the two cannot disagree). docs/deploy.md explains every part.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name: part of every resource name')
param environmentName string

@minLength(1)
@description('Region of the app, storage, Service Bus and monitoring (one that offers Flex Consumption)')
param location string

@description('Resource id of an existing hub (Azure OpenAI account that trains), in this tenant. Empty: create one.')
param hubResourceId string = ''

@description('Region of a new hub: it must offer fine-tuning for the base models you train (docs/deploy.md)')
param newHubLocation string = 'swedencentral'

@allowed([512, 2048, 4096])
@description('Memory of each Flex Consumption instance (validation holds one tokenizer, ~80 MB, per worker)')
param instanceMemoryMB int = 2048

@minValue(40)
@maxValue(1000)
@description('Upper bound on Flex Consumption scale-out')
param maximumInstanceCount int = 40

@allowed(['3.13'])
@description('Python of the Flex runtime: azure-functions 2.x needs 3.13')
param pythonVersion string = '3.13'

@description('Base model of a run whose run.json names none')
param defaultBaseModel string = 'gpt-4.1-mini-2025-04-14'

@description('NCRONTAB (UTC) of the poll timer')
param pollSchedule string = '0 */2 * * * *'

@description('NCRONTAB (UTC) of the keep-alive timer: well inside the 15-day inactivity limit')
param keepaliveSchedule string = '0 0 3 * * *'

@description('The operator API app registration: its client id (the aud of v2.0 tokens). Empty: the operator API answers 503 until set (docs/operator-api.md)')
param operatorApiAudience string = ''

// The spokes file the app reads (SPOKES_CONFIG) and the role assignments below both come from here.
var spokes = loadJsonContent('spokes.json')
var tenantId = tenant().tenantId
var token = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
  app: 'ftops'
}
var names = {
  resourceGroup: 'rg-ftops-${environmentName}'
  identity: 'id-ftops-${token}'
  storage: 'stftops${token}'
  serviceBus: 'sb-ftops-${token}'
  logAnalytics: 'log-ftops-${token}'
  appInsights: 'appi-ftops-${token}'
  plan: 'plan-ftops-${token}'
  functionApp: 'func-ftops-${token}'
  systemTopic: 'evgt-ftops-${token}'
  hub: 'oai-ftops-hub-${token}'
  deploymentContainer: 'app-package-${token}'
}
var containers = {
  datasets: 'datasets'
  reports: 'reports'
  quarantine: 'quarantine'
  traffic: 'traffic'
}
var queues = {
  train: 'ftops-train'
  evaluate: 'ftops-evaluate'
  deploy: 'ftops-deploy'
  commands: 'ftops-commands'
}
var eventsTopic = 'ftops-events'
var newHub = empty(hubResourceId)
// /subscriptions/<sub>/resourceGroups/<rg>/providers/Microsoft.CognitiveServices/accounts/<name>
var newHubId = '/subscriptions/${subscription().subscriptionId}/resourceGroups/${names.resourceGroup}/providers/Microsoft.CognitiveServices/accounts/${names.hub}'
var hubParts = split(newHub ? newHubId : hubResourceId, '/')

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: names.resourceGroup
  location: location
  tags: tags
}

module identity 'modules/identity.bicep' = {
  name: 'identity'
  scope: rg
  params: {
    name: names.identity
    location: location
    tags: tags
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: names.storage
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    containers: [containers.datasets, containers.reports, containers.quarantine, containers.traffic]
    deploymentContainer: names.deploymentContainer
  }
}

module messaging 'modules/messaging.bicep' = {
  name: 'messaging'
  scope: rg
  params: {
    name: names.serviceBus
    location: location
    tags: tags
    principalId: identity.outputs.principalId
    queues: [queues.train, queues.evaluate, queues.deploy, queues.commands]
    eventsTopic: eventsTopic
    operatorsSubscription: 'operators'
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: names.logAnalytics
    appInsightsName: names.appInsights
    location: location
    tags: tags
    principalId: identity.outputs.principalId
  }
}

module hub 'modules/hub.bicep' = if (newHub) {
  name: 'hub'
  scope: rg
  params: {
    name: names.hub
    location: newHubLocation
    tags: tags
  }
}

resource existingHub 'Microsoft.CognitiveServices/accounts@2024-10-01' existing = if (!newHub) {
  name: hubParts[8]
  scope: resourceGroup(hubParts[2], hubParts[4])
}

module hubAccess 'modules/openai-access.bicep' = {
  name: 'hub-access'
  scope: resourceGroup(hubParts[2], hubParts[4])
  dependsOn: [
    hub
  ]
  params: {
    accountName: hubParts[8]
    principalId: identity.outputs.principalId
  }
}

module spokeAccess 'modules/spokes.bicep' = [for env in spokes.environments: {
  name: take('ftops-spokes-${env.name}', 64)
  params: {
    environmentName: env.name
    targets: env.targets
    principalId: identity.outputs.principalId
    tenantId: tenantId
  }
}]

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: names.systemTopic
    location: location
    tags: tags
    storageAccountId: storage.outputs.id
  }
}

var identitySettings = {
  credential: 'managedidentity'
  clientId: identity.outputs.clientId
}

// Every setting the code reads in Azure (shared/run/config.py, the trigger bindings, telemetry, identity) and
// nothing Flex forbids (no FUNCTIONS_WORKER_RUNTIME, WEBSITE_RUN_FROM_PACKAGE, ...). docs/deploy.md lists
// each one; tests/unit/test_infra_settings.py checks both directions.
var appSettings = {
  AzureWebJobsStorage__credential: identitySettings.credential
  AzureWebJobsStorage__clientId: identitySettings.clientId
  AzureWebJobsStorage__blobServiceUri: storage.outputs.blobEndpoint
  AzureWebJobsStorage__queueServiceUri: storage.outputs.queueEndpoint
  AzureWebJobsStorage__tableServiceUri: storage.outputs.tableEndpoint
  DatasetStorage__credential: identitySettings.credential
  DatasetStorage__clientId: identitySettings.clientId
  DatasetStorage__blobServiceUri: storage.outputs.blobEndpoint
  DatasetStorage__queueServiceUri: storage.outputs.queueEndpoint
  DatasetStorage__tableServiceUri: storage.outputs.tableEndpoint
  ServiceBusConnection__credential: identitySettings.credential
  ServiceBusConnection__clientId: identitySettings.clientId
  ServiceBusConnection__fullyQualifiedNamespace: messaging.outputs.fullyQualifiedNamespace
  AZURE_CLIENT_ID: identitySettings.clientId
  APPLICATIONINSIGHTS_CONNECTION_STRING: monitoring.outputs.connectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identitySettings.clientId};Authorization=AAD'
  FTOPS_TRANSPORT: 'servicebus'
  FTOPS_CREDENTIAL: 'default'
  FTOPS_TABLE_PREFIX: ''
  HUB_ENDPOINT: newHub ? hub.outputs.endpoint : existingHub.properties.endpoint
  HUB_RESOURCE_ID: join(hubParts, '/')
  HUB_TENANT_ID: tenantId
  HUB_API_VERSION: 'v1'
  ARM_ENDPOINT: environment().resourceManager
  SPOKES_CONFIG: string(spokes)
  DATASETS_CONTAINER: containers.datasets
  REPORTS_CONTAINER: containers.reports
  QUARANTINE_CONTAINER: containers.quarantine
  TRAFFIC_CONTAINER: containers.traffic
  TRAIN_QUEUE: queues.train
  EVALUATE_QUEUE: queues.evaluate
  DEPLOY_QUEUE: queues.deploy
  COMMANDS_QUEUE: queues.commands
  EVENTS_TOPIC: eventsTopic
  POLL_SCHEDULE: pollSchedule
  KEEPALIVE_SCHEDULE: keepaliveSchedule
  HARVEST_SCHEDULE: '0 30 2 * * *'
  DRIFT_SCHEDULE: '0 0 */6 * * *'
  DEFAULT_BASE_MODEL: defaultBaseModel
  INTAKE_WAIT_SECONDS: '60'
  HUB_FILE_RETENTION: 'delete'
  HUB_MULTIPART_THRESHOLD_MB: '100'
  POLL_CONCURRENCY: '8'
  KEEPALIVE_CONCURRENCY: '16'
  SMOKE_TIMEOUT_SECONDS: '300'
  RESULTS_WAIT_SECONDS: '900'
  HOSTING_PRICES: ''
  OPERATOR_TENANT_ID: tenantId
  OPERATOR_API_AUDIENCE: operatorApiAudience
  OPERATOR_AUTHORITY: environment().authentication.loginEndpoint
}

module app 'modules/app.bicep' = {
  name: 'app'
  scope: rg
  params: {
    name: names.functionApp
    planName: names.plan
    location: location
    tags: tags
    identityId: identity.outputs.id
    deploymentContainerUrl: '${storage.outputs.blobEndpoint}${names.deploymentContainer}'
    pythonVersion: pythonVersion
    instanceMemoryMB: instanceMemoryMB
    maximumInstanceCount: maximumInstanceCount
    appSettings: appSettings
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.name
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_EVENTGRID_SYSTEM_TOPIC string = eventGrid.outputs.name
output FTOPS_DATASETS_CONTAINER string = containers.datasets
output FTOPS_INTAKE_FUNCTION string = 'intake'
output FTOPS_IDENTITY_PRINCIPAL_ID string = identity.outputs.principalId
output FTOPS_IDENTITY_CLIENT_ID string = identity.outputs.clientId
output FTOPS_HUB_RESOURCE_ID string = join(hubParts, '/')
output FTOPS_SERVICEBUS_NAMESPACE string = messaging.outputs.name
// What `ftops --env-file` (`azd env get-values` output) reads beyond the names above (ftops_cli/target.py)
output FTOPS_HUB_ENDPOINT string = appSettings.HUB_ENDPOINT
output FTOPS_REPORTS_CONTAINER string = containers.reports
output FTOPS_API_URL string = 'https://${app.outputs.defaultHostName}/api'
// Spokes in another tenant: Bicep cannot grant them; infra/scripts/cross-tenant-app.sh does (docs/deploy.md).
output FTOPS_CROSS_TENANT_SPOKES array = [for (env, i) in spokes.environments: spokeAccess[i].outputs.crossTenantAccounts]
