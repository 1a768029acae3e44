"""The framework's ceiling for bench/api.py: a bare FastAPI app answering a constant JSON
object, served by uvicorn with the settings ``stockctl serve`` runs it with (one process, the
same HTTP protocol class, no server header, uvicorn's access log off, the same keep-alive
timeout, log level info).

Usage: python bench/_bare_app.py PORT
"""

from __future__ import annotations

import sys

import uvicorn
from fastapi import FastAPI

from stockctl.commands.serve import KEEP_ALIVE_SECONDS, _raise_open_files_limit

app = FastAPI()
ANSWER = {"product_id": "P000001", "warehouse_id": "WH001", "sellable": 32}


@app.get("/bare")
async def bare() -> dict[str, object]:
    return ANSWER


if __name__ == "__main__":
    _raise_open_files_limit()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        log_level="info",
        server_header=False,
        access_log=False,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
        http="stockctl.daemons.api.protocol:ProblemH11Protocol",
    )
