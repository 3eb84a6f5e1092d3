"""Inference: forecasting from a saved model (``predict``), its input and output files (``io``), and the MLflow
pyfunc that serves it (``serving``). Nothing here imports Lightning; only ``serving`` and remote fetches import
MLflow."""
