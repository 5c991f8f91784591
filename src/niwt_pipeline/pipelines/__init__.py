"""One Kedro pipeline per folder; see ``pipeline_registry.py``."""
