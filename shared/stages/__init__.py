"""One module per stage of a run: intake, training, polling, evaluation, deployment, keepalive, retirement,
rollback; the queue's commands and their checks; approvals (the gate between environments); doctor (what is
stuck). Each exposes handlers `handler(message_or_args, deps)`; `functions/` and the operator API call them.

May import every room below it: run, store, azure, app, validation, evaluation.
"""
