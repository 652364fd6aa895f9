"""A stand-in for the Azure Functions host on one machine (Core Tools cannot be installed here).

It reads the app's own trigger declarations and serves them from Azurite: blob-created events, NCRONTAB
timer ticks, and Service Bus queue messages with peek-lock, delivery counts, settlement actions and
dead-lettering. Run it as `python -m local.devhost`; tests use `DevHost` in-process.
"""
from __future__ import annotations

from local.devhost.cron import CronError, Schedule
from local.devhost.host import CHAOS_EXIT_CODE, DevHost, HostOptions
from local.devhost.servicebus import LocalMessageActions, LocalServiceBusMessage
from local.devhost.triggers import Trigger, TriggerError, discover

__all__ = ["CHAOS_EXIT_CODE", "CronError", "DevHost", "HostOptions", "LocalMessageActions",
           "LocalServiceBusMessage", "Schedule", "Trigger", "TriggerError", "discover"]
