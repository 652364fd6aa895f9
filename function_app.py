"""The Functions entry point: create the app, set up telemetry, register one blueprint per stage."""
import logging
import os

import azure.functions as func

from functions import (
    commands,
    console,
    deployment,
    drift,
    evaluation,
    harvest,
    intake,
    keepalive,
    operator,
    outbox,
    polling,
    reconcile,
    training,
    webhooks,
)
from shared.app.telemetry import app_configures_telemetry

if app_configures_telemetry(os.environ):   # in Azure the Python worker does it (PYTHON_APPLICATIONINSIGHTS_ENABLE_TELEMETRY)
    from azure.monitor.opentelemetry import configure_azure_monitor
    configure_azure_monitor()
logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs' request logs would drown the app's own

app = func.FunctionApp()
for stage in (intake, training, polling, outbox, evaluation, deployment, keepalive, reconcile, harvest, drift,
              commands, operator, console, webhooks):
    app.register_functions(stage.bp)
