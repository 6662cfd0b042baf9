"""The statistics of saved predictions (pure pandas/numpy/scipy/statsmodels; no model): saved runs read
back (runs.py), the question x persona matrix, persona and factor effects, the regression,
the shrunken best persona and rank intervals (shrinkage.py), persona-selection strategies and their
selection-aware intervals (selection.py), mechanisms, logit scoring against generation, run summaries, and
synthetic predictions with planted effects for testing all of it."""
