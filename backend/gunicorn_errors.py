"""gunicorn's own error answers (a header with a control character, a request line too long...) as
problem+json with the security headers, like every answer of the app.

gunicorn refuses such requests before the app sees them and writes a small HTML page through
`gunicorn.util.write_error`; it has no setting for the format, so gunicorn.conf.py swaps that one
function for `write_problem` when the server starts (`install`).
"""

from __future__ import annotations

import json
import socket

from backend.problems import PROBLEM_MIMETYPE
from backend.web.security import SECURITY_HEADERS


def problem_bytes(status: int, reason: str, detail: str) -> bytes:
    body = json.dumps(
        {"type": "about:blank", "title": reason, "status": status, "detail": detail or reason}
    ).encode()
    headers = {
        "Connection": "close",
        "Content-Type": PROBLEM_MIMETYPE,
        "Content-Length": str(len(body)),
        **SECURITY_HEADERS,
    }
    head = f"HTTP/1.1 {status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode("latin-1") + b"\r\n" + body


def write_problem(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    from gunicorn import util

    # The message may quote the offending bytes; keep it printable ASCII.
    detail = "".join(c if " " <= c <= "~" else "?" for c in str(mesg))
    util.write_nonblock(sock, problem_bytes(int(status_int), reason, detail))


def install() -> None:
    """Called by gunicorn.conf.py's `on_starting` hook, in the master before workers fork."""
    from gunicorn import util

    util.write_error = write_problem
