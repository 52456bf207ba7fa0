"""Pareto fronts, tables, plots and reports over repvgg-search results."""
