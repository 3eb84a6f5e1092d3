"""The training path every command shares: build the data and the model, fit, test, record in MLflow."""

from forecast.pipeline.options import TrainOptions, TrainResult
from forecast.pipeline.run import build, run_name, train

__all__ = ["TrainOptions", "TrainResult", "build", "run_name", "train"]
