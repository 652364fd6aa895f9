"""Which ftops a CLI command talks to: a deployed environment's env file (azd's outputs turned into the
app's settings), the settings in the environment, or the local stack a running demo left its address for."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from ftops_cli.target import NoTarget, read_state, resolve, write_state

AZD_VALUES = '''AZURE_ENV_NAME="ftops-prod"
AZURE_FUNCTION_APP_NAME="func-ftops-abc123"
AZURE_STORAGE_ACCOUNT_NAME="stftopsabc123"
AZURE_TENANT_ID="11111111-2222-3333-4444-555555555555"
FTOPS_DATASETS_CONTAINER="datasets"
FTOPS_HUB_RESOURCE_ID="/subscriptions/s/resourceGroups/rg/providers/Microsoft.CognitiveServices/accounts/hub-ftops"
FTOPS_SERVICEBUS_NAMESPACE="sb-ftops-abc123"
FTOPS_OPERATOR_API_AUDIENCE="c0ffee00-0000-4000-8000-00000000f7a9"
FTOPS_CROSS_TENANT_SPOKES="[[]]"
FTOPS_REPORTS_CONTAINER="reports"
'''


def test_azd_env_values_become_the_apps_settings(tmp_path: Path) -> None:
    env_file = tmp_path / "ftops.env"
    env_file.write_text(AZD_VALUES)
    target = resolve(str(env_file), {})
    env = target.env
    assert env["DatasetStorage__blobServiceUri"] == "https://stftopsabc123.blob.core.windows.net"
    assert env["DatasetStorage__tableServiceUri"] == "https://stftopsabc123.table.core.windows.net"
    assert env["ServiceBusConnection__fullyQualifiedNamespace"] == "sb-ftops-abc123.servicebus.windows.net"
    assert env["HUB_ENDPOINT"] == "https://hub-ftops.openai.azure.com"
    assert env["FTOPS_API_URL"] == "https://func-ftops-abc123.azurewebsites.net/api"
    assert env["OPERATOR_API_AUDIENCE"] == "c0ffee00-0000-4000-8000-00000000f7a9"
    assert env["FTOPS_CROSS_TENANT_SPOKES"] == "[[]]" and env["REPORTS_CONTAINER"] == "reports"
    assert str(env_file) in target.where


def test_the_outputs_main_bicep_declares_for_the_cli_are_taken_as_they_are(tmp_path: Path) -> None:
    env_file = tmp_path / "ftops.env"
    env_file.write_text(AZD_VALUES + 'FTOPS_HUB_ENDPOINT="https://custom-sub.openai.azure.com/"\n'
                        'FTOPS_API_URL="https://func-ftops-abc123.azurewebsites.net/api"\n')
    env = resolve(str(env_file), {}).env
    assert env["HUB_ENDPOINT"] == "https://custom-sub.openai.azure.com/"
    assert env["FTOPS_API_URL"] == "https://func-ftops-abc123.azurewebsites.net/api"
    bicep = (Path(__file__).resolve().parents[2] / "infra" / "main.bicep").read_text()
    for output in ("FTOPS_HUB_ENDPOINT", "FTOPS_REPORTS_CONTAINER", "FTOPS_API_URL", "AZURE_STORAGE_ACCOUNT_NAME",
                   "FTOPS_SERVICEBUS_NAMESPACE", "FTOPS_HUB_RESOURCE_ID", "AZURE_FUNCTION_APP_NAME"):
        assert f"output {output} string" in bicep, output


def test_an_env_file_of_app_settings_is_taken_as_it_is(tmp_path: Path) -> None:
    env_file = tmp_path / "local.env"
    env_file.write_text("# mine\nexport DatasetStorage='UseDevelopmentStorage=true'\nHUB_ENDPOINT=https://h\n\n")
    env = resolve(None, {"FTOPS_ENV_FILE": str(env_file)}).env
    assert env == {"DatasetStorage": "UseDevelopmentStorage=true", "HUB_ENDPOINT": "https://h"}


def test_a_broken_or_missing_env_file_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.env"
    broken.write_text("DatasetStorage=x\nthis is not a setting\n")
    with pytest.raises(NoTarget, match=r"broken.env:2: not a KEY=value line"):
        resolve(str(broken), {})
    with pytest.raises(NoTarget, match="not found"):
        resolve(str(tmp_path / "nope.env"), {})


def test_the_running_local_stack_is_found_and_a_stale_one_is_not(tmp_path: Path) -> None:
    state = tmp_path / "local-stack.json"
    write_state(state, env={"DatasetStorage": "conn", "FTOPS_CREDENTIAL": "local-dev"}, api_url="http://127.0.0.1:5/api",
                reports_dir=None)
    assert oct(state.stat().st_mode & 0o777) == "0o600"
    target = resolve(None, {}, state=state)
    assert target.env["FTOPS_API_URL"] == "http://127.0.0.1:5/api" and target.env["DatasetStorage"] == "conn"
    assert "http://127.0.0.1:5/api/console/" in target.where
    stale = state.read_text().replace(f'"pid": {os.getpid()}', '"pid": 999999999')
    state.write_text(stale)
    assert read_state(state) is None
    with pytest.raises(NoTarget, match=r"ftops demo --keep-running.*--env-file"):
        resolve(None, {}, state=state)


def test_settings_in_the_environment_win_over_a_local_stack(tmp_path: Path) -> None:
    state = tmp_path / "local-stack.json"
    write_state(state, env={"DatasetStorage": "local"}, api_url="http://x/api", reports_dir=None)
    assert resolve(None, {"DatasetStorage": "mine"}, state=state).env == {}
