"""ftops' code, importable and testable without the Functions runtime, in rooms by role.

Imports run one way, from the bottom of this list up (a room may import the rooms before it, never after):

    run         the run's vocabulary and configuration: states, settings, rules, messages, commands, models,
                topology, costs — pure data and rules, no I/O beyond reading settings
    store       Azure Storage mechanics: registry (runs, slots, approvals, audit), outbox, claims, blob I/O
    azure       adapters to Azure: the hub (openai SDK), ARM deployments, spokes, Service Bus, credentials,
                Entra ID token checks, chat
    app         wiring: ports (the Protocols), bootstrap (Deps, built once), message settlement
    validation  streaming dataset validation (and the drop's split and checks)
    evaluation  graders, intervals, gates, runner, reports and plots
    stages      one module per stage: intake, training, polling, evaluation, deployment, keepalive,
                retirement, rollback, commands, approvals
    operator    the operator API and the console

Above `shared/`: `functions/` (thin triggers), `ftops_cli/`, `local/`. The order is `LAYERS` below;
`tests/unit/test_layers.py` fails on any import against it. Imports under `if TYPE_CHECKING:` are exempt:
they never run (so they cannot make an import circle at run time) and exist for the type checker only — the
stages' `Deps` type is the usual one. docs/ARCHITECTURE.md draws the rooms.
"""

LAYERS: tuple[str, ...] = ("run", "store", "azure", "app", "validation", "evaluation", "stages", "operator")
