"""The HTTP API service: ingest, directory, feeds, health (see :mod:`services.api.app`)."""

from services.api.app import create_app, run_api
from services.api.state import ApiSettings

__all__ = ["ApiSettings", "create_app", "run_api"]
