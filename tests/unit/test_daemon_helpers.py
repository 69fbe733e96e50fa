"""Loopback servers and an in-memory IPVS for the ipvsmand tests (helpers: no tests of their own)."""

from __future__ import annotations

import http.server
import socket
import socketserver
import struct
import threading
import time

from ipvsman import model
from ipvsman.daemon import desired


class Web:
    """An HTTP server on 127.0.0.1 whose answer the test sets: status, body, delay."""

    def __init__(self, status: int = 200, body: bytes = b"ok", delay: float = 0.0):
        self.status, self.body, self.delay = status, body, delay
        self.requests: list[tuple[str, str, str]] = []  # method, path, Host header
        web = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _answer(self):
                web.requests.append((self.command, self.path, self.headers.get("Host", "")))
                time.sleep(web.delay)
                self.send_response(web.status)
                self.send_header("Content-Length", str(len(web.body)))
                self.end_headers()
                if self.command != "HEAD":
                    try:
                        self.wfile.write(web.body)
                    except OSError:
                        pass  # the check stopped reading at its bound

            do_GET = do_HEAD = _answer

            def log_message(self, *args):
                pass

        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


class Dns:
    """A DNS responder on a UDP loopback socket: answers each query with `answer` (or `rcode`)."""

    def __init__(self, answer: str = "192.0.2.7", rcode: int = 0, reply: bool = True):
        self.answer, self.rcode, self.reply = answer, rcode, reply
        self.queries: list[str] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            query_id, _, qdcount = struct.unpack_from("!HHH", data)
            end = 12
            labels = []
            while data[end]:
                labels.append(data[end + 1 : end + 1 + data[end]].decode())
                end += 1 + data[end]
            end += 5  # the root label, qtype, qclass
            self.queries.append(".".join(labels))
            if not self.reply:
                continue
            question = data[12:end]
            answers = b""
            count = 0
            if self.rcode == 0 and self.answer:
                rdata = socket.inet_aton(self.answer)
                answers = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + rdata  # a pointer to the question
                count = 1
            header = struct.pack("!HHHHHH", query_id, 0x8180 | self.rcode, qdcount, count, 0, 0)
            self.sock.sendto(header + question + answers, peer)

    def close(self):
        self.sock.close()


def closed_port() -> int:
    """A loopback port nothing listens on (bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FakeKernel:
    """IPVS as a dict, with the same two coroutines ThreadedKernel has; records every action."""

    def __init__(self, services: tuple[model.Service, ...] = ()):
        self.services = {service.key: service for service in services}
        self.actions: list[desired.Action] = []

    async def read_services(self):
        return tuple(self.services.values())

    async def apply(self, action):
        self.actions.append(action)
        if isinstance(action, (desired.CreateService, desired.EditService)):
            old = self.services.get(action.key)
            self.services[action.key] = model.Service(
                action.key, action.scheduler, action.persistent, action.netmask, dests=old.dests if old else ()
            )
            return
        service = self.services[action.service]
        dests = [d for d in service.dests if (d.address, d.port) != (action.address, action.port)]
        if isinstance(action, (desired.AddDest, desired.SetDest)):
            dests.append(model.Dest(action.address, action.port, action.forward, action.weight))
        self.services[action.service] = model.Service(
            service.key, service.scheduler, service.persistent, service.netmask, dests=tuple(dests)
        )

    def weight(self, service: model.ServiceKey, address: str, port: int) -> int | None:
        dest = self.services[service].find_dest(address, port)
        return None if dest is None else dest.weight
