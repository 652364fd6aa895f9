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

@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
@description('Replication of the storage account, which holds datasets, reports and the registry tables (runs, approvals, audit)')
param storageSku string = 'Standard_LRS'

@description('Base model of a run whose run.json names none')
param defaultBaseModel string = 'gpt-4.1-mini-2025-04-14'

@description('NCRONTAB (UTC) of the poll timer')
param pollSchedule string = '0 */2 * * * *'

@description('NCRONTAB (UTC) of the outbox sweep timer (messages a crash left unsent)')
param outboxSchedule string = '0 * * * * *'

@description('NCRONTAB (UTC) of the keep-alive timer: well inside the 15-day inactivity limit')
param keepaliveSchedule string = '0 0 3 * * *'

@description('NCRONTAB (UTC) of the reconcile timer: starts drops whose Event Grid event was lost (docs/deploy.md)')
param reconcileSchedule string = '0 17 * * * *'

@description('The operator API app registration: its client id (the aud of v2.0 tokens). Empty: the operator API answers 503 until set (docs/operator-api.md)')
param operatorApiAudience string = ''

@secure()
@description('The whsec_ signing secret of the hub webhook endpoint (infra/scripts/register-webhook.sh stores it in the azd environment as FTOPS_HUB_WEBHOOK_SECRET); empty until registered: the poll timer alone follows the jobs')
param hubWebhookSecret string = ''

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
  // BlobCreated events Event Grid gave up on (infra/scripts/postdeploy.sh); the reconcile timer re-scans datasets/
  deadLetters: 'eventgrid-deadletters'
  traffic: 'traffic'
}
var queues = {
  train: 'ftops-train'
  evaluate: 'ftops-evaluate'
  deploy: 'ftops-deploy'
  commands: 'ftops-commands'
  // one job to poll now: the hub's webhook hands it over (functions/webhooks.py → functions/polling.py poll_job)
  poll: 'ftops-poll'
}
var eventsTopic = 'ftops-events'
var newHub = empty(hubResourceId)
// Deployment names are unique per subscription and scope: a second ftops environment (another azd environment, or
// the same one in another region) must not reuse one, or ARM answers InvalidDeploymentLocation / overwrites the
// other's history. `token` already varies with the subscription, the azd environment and the region.
var deploymentSuffix = token
// Spokes this deployment can grant roles on: the ones in its own tenant. The others are filtered out before any
// module is declared for them (a skipped module scoped to a foreign subscription may still be validated by ARM:
// Azure/bicep#11463); infra/scripts/cross-tenant-app.sh grants those.
var spokeEnvironments = spokes.environments
var spokeTargetLists = [for env in spokeEnvironments: env.targets]
var allSpokeTargets = flatten(spokeTargetLists)
var sameTenantSpokeTargets = filter(allSpokeTargets, t => t.tenant == tenantId)
var crossTenantSpokeTargets = filter(allSpokeTargets, t => t.tenant != tenantId)
var spokeSubscriptionList = [for t in sameTenantSpokeTargets: '/subscriptions/${t.subscription}']
// The custom spoke role (infra/spoke-role.json, docs/deploy.md "Roles"), assignable where the spokes are
var spokeRole = loadJsonContent('spoke-role.json')
var spokeRoleScopes = union(spokeSubscriptionList, [subscription().id])
// The harvest's extra right (infra/spoke-harvest-role.json: reading stored completions), in a role of its own so that
// it is held only on the spokes of environments whose harvest reads them (shared/run/topology.py HarvestPolicy: a
// `harvest` object whose `sources`, by default both, include stored_completions). Azure allows no condition on a
// Cognitive Services role assignment (ABAC conditions exist for blob and queue data actions only), hence two roles.
// Nested `?:` rather than `&&`: ARM's if() evaluates only the branch taken (Learn "Logical functions for ARM templates",
// if), so a missing `harvest` is never read; `harvest: {}` is a harvest with the defaults, `null` none.
var spokeHarvestRole = loadJsonContent('spoke-harvest-role.json')
var harvestsStoredCompletions = [for env in spokeEnvironments: contains(env, 'harvest') ? ((env.harvest == null) ? false : (contains(env.harvest, 'sources') ? contains(env.harvest.sources, 'stored_completions') : true)) : false]
var anyHarvestOfStoredCompletions = contains(harvestsStoredCompletions, true)
var spokeHarvestRoleGuid = guid(subscription().id, environmentName, location, 'ftops-spoke-harvest-role')
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
    containers: [containers.datasets, containers.reports, containers.quarantine, containers.traffic,
                 containers.deadLetters]
    deploymentContainer: names.deploymentContainer
    skuName: storageSku
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
    queues: [queues.train, queues.evaluate, queues.deploy, queues.commands, queues.poll]
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

// On the hub: Cognitive Services OpenAI Contributor (files, fine-tuning jobs, evaluation deployments).
module hubAccess 'modules/openai-access.bicep' = {
  name: take('ftops-hub-access-${deploymentSuffix}', 64)
  scope: resourceGroup(hubParts[2], hubParts[4])
  dependsOn: [
    hub
  ]
  params: {
    accountName: hubParts[8]
    principalId: identity.outputs.principalId
    roleGuid: 'a001fd3d-188f-4b5d-821b-7da978bf7442'
  }
}

// On a spoke: only what ftops does there (deployments read/write/delete, account read, chat). One role per ftops
// environment: role names are unique in a tenant, and each environment's role lists its own spoke subscriptions.
resource spokeRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(subscription().id, environmentName, location, 'ftops-spoke-role')
  properties: {
    roleName: '${spokeRole.roleName} (${environmentName}-${deploymentSuffix})'
    description: spokeRole.description
    type: 'CustomRole'
    permissions: [
      {
        actions: spokeRole.actions
        notActions: []
        dataActions: spokeRole.dataActions
        notDataActions: []
      }
    ]
    assignableScopes: spokeRoleScopes
  }
}

// Only where some environment harvests stored completions (the role is otherwise never created)
resource spokeHarvestRoleDefinition 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (anyHarvestOfStoredCompletions) {
  name: spokeHarvestRoleGuid
  properties: {
    roleName: '${spokeHarvestRole.roleName} (${environmentName}-${deploymentSuffix})'
    description: spokeHarvestRole.description
    type: 'CustomRole'
    permissions: [
      {
        actions: spokeHarvestRole.actions
        notActions: []
        dataActions: spokeHarvestRole.dataActions
        notDataActions: []
      }
    ]
    assignableScopes: spokeRoleScopes
  }
}

module spokeAccess 'modules/spokes.bicep' = [for (env, i) in spokeEnvironments: {
  name: take('ftops-spokes-${env.name}-${deploymentSuffix}', 64)
  dependsOn: [
    spokeHarvestRoleDefinition
  ]
  params: {
    environmentName: env.name
    targets: filter(env.targets, t => t.tenant == tenantId)
    principalId: identity.outputs.principalId
    roleGuid: spokeRoleDefinition.name
    harvestRoleGuid: harvestsStoredCompletions[i] ? spokeHarvestRoleGuid : ''
    deploymentSuffix: deploymentSuffix
  }
}]

module eventGrid 'modules/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    name: names.systemTopic
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    deadLetterContainer: containers.deadLetters
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
  // host.json's telemetryMode is OpenTelemetry: the Python worker exports its own logs and traces (and tells the
  // host so, which then stops forwarding them): without this every worker log reached App Insights twice.
  PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY: 'true'
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
  POLL_QUEUE: queues.poll
  EVENTS_TOPIC: eventsTopic
  POLL_SCHEDULE: pollSchedule
  OUTBOX_SCHEDULE: outboxSchedule
  KEEPALIVE_SCHEDULE: keepaliveSchedule
  RECONCILE_SCHEDULE: reconcileSchedule
  HARVEST_SCHEDULE: '0 30 2 * * *'
  DRIFT_SCHEDULE: '0 0 */6 * * *'
  DEFAULT_BASE_MODEL: defaultBaseModel
  INTAKE_WAIT_SECONDS: '60'
  MAX_DATASET_MB: '2048'
  VALIDATION_MAX_SECONDS: '1200'
  HUB_FILE_RETENTION: 'delete'
  HUB_MULTIPART_THRESHOLD_MB: '100'
  HUB_CONCURRENT_JOBS: '3'
  RETIREMENT_WARNING_DAYS: '180'
  POLL_CONCURRENCY: '8'
  KEEPALIVE_CONCURRENCY: '16'
  SMOKE_TIMEOUT_SECONDS: '300'
  RESULTS_WAIT_SECONDS: '900'
  HUB_WEBHOOK_SECRET: hubWebhookSecret
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
output FTOPS_DEADLETTER_CONTAINER string = containers.deadLetters
output FTOPS_STORAGE_ACCOUNT_ID string = storage.outputs.id
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
output FTOPS_CROSS_TENANT_SPOKES array = [for t in crossTenantSpokeTargets: t.account]
output FTOPS_SPOKE_ROLE_ID string = spokeRoleDefinition.name
output FTOPS_SPOKE_HARVEST_ROLE_ID string = anyHarvestOfStoredCompletions ? spokeHarvestRoleGuid : ''
