"""Wiring: the ports (Protocols the stages see), `bootstrap` (the one place settings and clients are built;
handlers get a `Deps`), and `settlement` (how a handler's outcome settles its message: complete, retry,
dead-letter with a reason).

May import `shared.run`, `shared.store` and `shared.azure`.
"""
