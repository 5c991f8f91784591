"""niwt-pipeline: Neuron Importance-Aware Weight Transfer as a Kedro project."""

__version__ = "0.1.0"
