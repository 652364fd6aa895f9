"""Building the app's clients: a service URI the identity-based setup needs but lacks is named by its setting."""
import pytest

from shared.app.bootstrap import build_deps
from shared.run.config import ConfigError, Settings

IDENTITY_BASED = {
    "DatasetStorage__blobServiceUri": "https://account.blob.core.windows.net",
    "ServiceBusConnection__fullyQualifiedNamespace": "bus.servicebus.windows.net",
    "HUB_ENDPOINT": "https://hub.openai.azure.com",
    "HUB_RESOURCE_ID": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub",
}


def test_a_missing_table_service_uri_is_named() -> None:
    settings = Settings.from_env(IDENTITY_BASED)   # blob URI given, table URI not
    with pytest.raises(ConfigError, match="DatasetStorage__tableServiceUri must be set"):
        build_deps(settings)
