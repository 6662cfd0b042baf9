"""The statistics of saved predictions (pure pandas/numpy/scipy/statsmodels; no model): saved runs read
back (runs.py), the question x persona matrix, persona and factor effects, the regression,
persona-selection strategies, mechanisms, logit scoring against generation, run summaries, and
synthetic predictions with planted effects for testing all of it."""
