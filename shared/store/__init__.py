"""Storage mechanics on Azure Storage (Tables and Blobs): the registry of runs, deployment slots, approvals and
the audit trail; the outbox; claims and conditional updates; blob I/O; the hub job index; events (a
transition's announcement through the outbox).

May import `shared.run`. Knows nothing of Azure OpenAI, ARM or Service Bus.
"""
