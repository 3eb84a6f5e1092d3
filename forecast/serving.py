"""Where artifacts written by forecast 0.1.0 look for their pyfunc class.

Their logged ``pyfunc_model.py`` (MLflow "models from code", run at load time) imports
``forecast.serving.ForecastPyfunc``; the class lives in :mod:`forecast.inference.serving` now.
"""

from forecast.inference.serving import ForecastPyfunc

__all__ = ["ForecastPyfunc"]
