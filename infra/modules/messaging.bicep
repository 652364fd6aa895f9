// Service Bus Standard: the stage queues, the commands queue, the ftops-events topic and its operators
// subscription. Entra ID only (local SAS auth off). The queue properties are what shared/azure/bus.py's
// QUEUE_CONTRACT says the handlers rely on (a contract test compares them).
param name string
param location string
param tags object
param principalId string
param queues array
param eventsTopic string
param operatorsSubscription string

// The Service Bus triggers (functions/training, evaluation, deployment, commands, polling's poll_job) receive, and Flex
// Consumption target-based scaling reads the message count of each queue, which needs the Manage right: with
// Receiver alone the scale controller logs unauthorized warnings and falls back to slower incremental scaling
// (docs/deploy.md, "Roles"; docs/azure-sources.md). Data Owner is the only built-in data role with Manage, so
// it is assigned on each of the five trigger queues, never on the namespace.
var roles = {
  // publishing stage messages and events (shared/azure/bus.py ServiceBusPublisher)
  dataSender: '69a216fc-b8fb-44d8-bc22-1f3c2cd27a39'
  // the Service Bus triggers, and the scale controller reading queue lengths (see above)
  dataOwner: '090c5cfd-751d-490a-894a-3ce6f1109419'
}

resource namespace 'Microsoft.ServiceBus/namespaces@2024-01-01' = {
  name: name
  location: location
  tags: tags
  sku: {
    name: 'Standard'
  }
  properties: {
    disableLocalAuth: true
    minimumTlsVersion: '1.2'
    publicNetworkAccess: 'Enabled'
  }
}

resource stageQueues 'Microsoft.ServiceBus/namespaces/queues@2024-01-01' = [for q in queues: {
  parent: namespace
  name: q
  properties: {
    // MessageId = CloudEvent id: a resend after a crash is dropped (shared/azure/bus.py, shared/run/messages.py)
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    // abandoned (transient) failures are retried this often, then dead-lettered (shared/handling.py)
    maxDeliveryCount: 10
    requiresSession: false
    // the Functions host renews the lock up to host.json maxAutoLockRenewalDuration (30 min)
    lockDuration: 'PT5M'
    deadLetteringOnMessageExpiration: true
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}]

resource topic 'Microsoft.ServiceBus/namespaces/topics@2024-01-01' = {
  parent: namespace
  name: eventsTopic
  properties: {
    // event ids are derived from the registry write (shared/store/events.py): a re-publish is dropped
    requiresDuplicateDetection: true
    duplicateDetectionHistoryTimeWindow: 'PT10M'
    defaultMessageTimeToLive: 'P14D'
    enablePartitioning: false
  }
}

// For other systems to read events (ftops itself never does). Unread events expire after 7 days and are then
// dropped, not dead-lettered: a subscription nobody reads must not fill the topic's quota (publishing fails once
// the topic is full).
resource operators 'Microsoft.ServiceBus/namespaces/topics/subscriptions@2024-01-01' = {
  parent: topic
  name: operatorsSubscription
  properties: {
    maxDeliveryCount: 10
    requiresSession: false
    lockDuration: 'PT1M'
    deadLetteringOnMessageExpiration: false
    defaultMessageTimeToLive: 'P7D'
  }
}

resource sender 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(namespace.id, principalId, roles.dataSender)
  scope: namespace
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.dataSender)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource triggerQueueOwner 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (q, i) in queues: {
  name: guid(stageQueues[i].id, principalId, roles.dataOwner)
  scope: stageQueues[i]
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.dataOwner)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}]

output name string = namespace.name
// serviceBusEndpoint is https://<name>.servicebus.windows.net:443/ (or the sovereign cloud's suffix)
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
