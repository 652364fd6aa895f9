"""The run's vocabulary and configuration: states, run settings and rules, messages and the command table,
model facts, topology (environments and spokes), the app's settings, costs, audit actors, what we echo.

Pure data and rules: no storage, no network, no SDK client. May import nothing else of `shared` (the bottom room).
"""
