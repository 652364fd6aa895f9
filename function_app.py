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
    polling,
    training,
)

if os.environ.get("APPLICATIONINSIGHTS_CONNECTION_STRING"):
    from azure.monitor.opentelemetry import configure_azure_monitor
    configure_azure_monitor()
logging.getLogger("azure").setLevel(logging.WARNING)  # the SDKs' request logs would drown the app's own

app = func.FunctionApp()
for stage in (intake, training, polling, evaluation, deployment, keepalive, harvest, drift, commands, operator, console):
    app.register_functions(stage.bp)
