"""The plugins that ship with kbert-tui; each is an ordinary PluginPort, loaded by name."""

from .best_model import BestModelPlugin
from .early_stopping import EarlyStoppingPlugin
from .error_threshold import ErrorThresholdPlugin
from .metrics_aggregator import MetricsAggregatorPlugin
from .metrics_csv import MetricsCsvPlugin

__all__ = [
    "BestModelPlugin",
    "EarlyStoppingPlugin",
    "ErrorThresholdPlugin",
    "MetricsAggregatorPlugin",
    "MetricsCsvPlugin",
]
