"""MLflow "models from code" entry point: MLflow runs this file to get the model object (nothing is pickled).

Logged by :func:`forecast.inference.serving.log_model` as the ``python_model`` of every run's ``model`` artifact.
"""

import mlflow

from forecast.inference.serving import ForecastPyfunc

mlflow.models.set_model(ForecastPyfunc())
