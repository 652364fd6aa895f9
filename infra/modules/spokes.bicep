// One environment of the spokes file: every spoke account in this tenant gets the app's identity as
// Cognitive Services OpenAI Contributor, through a module scoped to the spoke's own subscription and
// resource group (so a spoke in another subscription needs no second deployment). A spoke in another
// tenant cannot be reached by this deployment: infra/scripts/cross-tenant-app.sh grants it there, to the
// multi-tenant app its `credential.client_id` names (docs/deploy.md, "Spokes in another tenant").
targetScope = 'subscription'

param environmentName string
param targets array
param principalId string
param tenantId string

module access 'openai-access.bicep' = [for t in targets: if (t.tenant == tenantId) {
  name: take('ftops-spoke-${environmentName}-${t.account}', 64)
  scope: resourceGroup(t.subscription, t.resource_group)
  params: {
    accountName: t.account
    principalId: principalId
  }
}]

output crossTenantAccounts array = [for t in targets: t.tenant == tenantId ? '' : t.account]
