// One environment of the spokes file: every spoke account given here gets the app's identity in the custom spoke
// role (main.bicep defines it from infra/spoke-role.json), through a module scoped to the spoke's own
// subscription and resource group (so a spoke in another subscription needs no second deployment). main.bicep
// passes only the targets in this tenant: a spoke in another tenant cannot be reached by this deployment, and
// infra/scripts/cross-tenant-app.sh grants it there (docs/deploy.md, "Spokes in another tenant").
targetScope = 'subscription'

param environmentName string
@description('The targets of this environment that are in the deployment\'s own tenant')
param targets array
param principalId string
@description('The GUID of the role to assign on each spoke account')
param roleGuid string
@description('The GUID of the harvest role (stored completions read) to assign too; empty where this environment\'s harvest does not read stored completions')
param harvestRoleGuid string = ''
@description('Makes the nested deployment names unique per ftops environment (several may share a spoke)')
param deploymentSuffix string

module access 'openai-access.bicep' = [for t in targets: {
  name: take('ftops-spoke-${environmentName}-${t.account}-${deploymentSuffix}', 64)
  scope: resourceGroup(t.subscription, t.resource_group)
  params: {
    accountName: t.account
    principalId: principalId
    roleGuid: roleGuid
  }
}]

// The flywheel's harvest lists the stored completions of the model this environment serves (infra/spoke-harvest-role.json)
module harvest 'openai-access.bicep' = [for t in (empty(harvestRoleGuid) ? [] : targets): {
  name: take('ftops-spoke-harvest-${environmentName}-${t.account}-${deploymentSuffix}', 64)
  scope: resourceGroup(t.subscription, t.resource_group)
  params: {
    accountName: t.account
    principalId: principalId
    roleGuid: harvestRoleGuid
  }
}]
