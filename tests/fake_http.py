"""The pieces the fake API servers of the adapter tests share: scripted replies, recorded requests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any


@dataclass(frozen=True)
class Reply:
    status: int = 200
    body: Any = None  # a dict is sent as JSON, bytes as they are
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class RecordingHandler(BaseHTTPRequestHandler):
    """Records each request into ``seen`` (under ``lock``) and sends ``Reply``s."""

    def record_into(self, seen: list[Seen], lock: threading.Lock, body: Any) -> None:
        with lock:
            seen.append(Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))

    def send_reply(self, reply: Reply) -> None:
        data = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the client gave up (a timeout test)
