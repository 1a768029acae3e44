"""ASGI factory for multi-process serving: ``uvicorn stockctl.daemons.api.factory:build --factory``.

Each process wires itself from the environment (``STOCKCTL_*``), which ``stockctl serve``
sets from its flags before starting the processes.
"""

from __future__ import annotations

from fastapi import FastAPI

from stockctl.bootstrap import bootstrap
from stockctl.daemons.api.accesslog import configure_access_log
from stockctl.daemons.api.app import create_app
from stockctl.settings import load_settings


def build() -> FastAPI:
    configure_access_log()  # each process writes its own lines (uvicorn's access log is off)
    return create_app(bootstrap(load_settings()))
