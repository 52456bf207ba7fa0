"""The width search: an asynchronous multi-objective Optuna search over RepVGG widths, depths and groups.

Modules: `settings` (the `search:` schema and its checks), `plan` (candidates, budgets, the plan every worker gets),
`storage` (journal file or RDB, heartbeats), `study` (samplers, slots, the ask/tell loop), `worker` (one worker's
candidates), `driver` (the search as a sweep: plan, workers through the job layer), `collect` (results, Pareto set),
`cli` (`python -m repvgg_search.search SWEEP_DIR`: a worker started by hand).
"""
