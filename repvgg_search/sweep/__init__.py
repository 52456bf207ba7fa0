"""Sweeps: a grid over the base trial config, or an Optuna search (`repvgg_search.search`), through the job layer.

Modules: `spec` (the launch schema), `grid` (expanding axes into trials), `folder` (the sweep folder on disk),
`driver` (the grid sweep), `collect` (results.csv, summary.md), `actions` (status, cancel, detach), `cli`.
"""
