"""The operator side: the operator API (`api`: verified callers act on runs through the stages' handlers) and
the console (server-rendered pages over the same API).

May import every other room of `shared`; nothing in `shared` imports it.
"""
