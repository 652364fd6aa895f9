"""Evaluation: graders, metrics, intervals, gates, the candidates' runner, reports and plots.

A library of pure functions over examples and answers, except `hubdeploy` (the hub's temporary evaluation
deployments, through the ARM adapter); the stage that drives it is `shared.stages.evaluation`. SDK imports stay
inside functions so importing this package is cheap at cold start.

May import `shared.run`, `shared.store`, `shared.azure`, `shared.app` and `shared.validation`.
"""
