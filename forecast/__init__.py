"""forecast: long-term time-series forecasting with the paper protocol, on Lightning, Optuna and MLflow."""

__version__ = "0.1.0"
