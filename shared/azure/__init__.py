"""Adapters to Azure services: the hub (Azure OpenAI through the openai SDK), ARM deployments, the spokes over
them, Service Bus publishing, credentials, Entra ID token checks (`access`), and chat with a deployment.

May import `shared.run` and `shared.store`. SDK imports stay inside functions where they would cost every
worker's cold start.
"""
