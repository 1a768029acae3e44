"""The HTTP/1.1 protocol ``serve`` and ``up`` run uvicorn with: uvicorn's h11 one, except that
a request h11 cannot parse (a NUL or other control byte in a header, a malformed request line)
is answered with a problem document, as every other refusal is, instead of uvicorn's plain-text
"Invalid HTTP request received.". Such a request never reaches the app: uvicorn answers it
itself, so the app's error handlers cannot."""

from __future__ import annotations

import json

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from stockctl.daemons.api.deps import problem

DETAIL = "malformed HTTP request (e.g. a control character in a header or the request line)"


class ProblemH11Protocol(H11Protocol):
    def send_400_response(self, msg: str) -> None:
        body = json.dumps(problem(400, DETAIL, "bad-request")).encode()
        headers = [
            (b"content-type", b"application/problem+json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        for event in (
            h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
            h11.Data(data=body),
            h11.EndOfMessage(),
        ):
            output = self.conn.send(event)
            if output:
                self.transport.write(output)
        self.transport.close()
