"""The real server (gunicorn, ``serving/worker.py``) against clients on raw sockets: slow and
idle ones must neither keep healthy requests waiting nor stay connected past the read
timeout; kept-alive, pipelined, ``Expect: 100-continue`` and chunked requests are answered
as HTTP says, and a malformed or oversized body is a 4xx."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time

import pytest

from serving.config import MAX_BODY_BYTES
from serving.process import free_port, wait_ready
from tests.conftest import copy_data_dir
from tests.serving.helpers import flights_after_serve_end, request_body
from tests.serving.test_gunicorn import gunicorn_env, start_gunicorn, stop

pytestmark = pytest.mark.serving

#: REQUEST_READ_TIMEOUT of the server under test (seconds).
READ_TIMEOUT = 5
#: How long a healthy request may wait for its answer (socket timeout).
PROBE_TIMEOUT = 5.0


@pytest.fixture(scope="module")
def server(served_template, tmp_path_factory, use_case):
    data_dir = copy_data_dir(served_template, tmp_path_factory.mktemp("slow_clients") / "data")
    port = free_port()
    process = start_gunicorn(gunicorn_env(data_dir, port, REQUEST_READ_TIMEOUT=READ_TIMEOUT,
                                          FEATURE_LOG_SAMPLE_RATE=0))
    try:
        wait_ready(f"http://127.0.0.1:{port}", process, timeout=180)
        body = json.dumps(request_body(flights_after_serve_end(data_dir, use_case, 2))).encode()
        yield port, body
    finally:
        stop(process)
    assert process.returncode == 0, process.stderr.read().decode()[-2000:]


class SlowClient(threading.Thread):
    """Sends ``chunks`` one every ``interval`` seconds on its own connection, until the
    server answers or closes it, or ``stop`` is set; records what the server sent."""

    def __init__(self, port: int, chunks: list[bytes], interval: float = 2.0):
        super().__init__(daemon=True)
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.chunks, self.interval = chunks, interval
        self.received = b""
        self.closed = threading.Event()
        self.stop = threading.Event()

    def run(self):
        self.sock.settimeout(0.1)
        chunks = list(self.chunks)
        next_send = time.monotonic()
        try:
            while not self.stop.is_set():
                if chunks and time.monotonic() >= next_send:
                    self.sock.sendall(chunks.pop(0))
                    next_send += self.interval
                try:
                    data = self.sock.recv(4096)
                except socket.timeout:
                    continue
                if not data:
                    break
                self.received += data
        except OSError:
            pass
        finally:
            self.closed.set()
            self.sock.close()


def probe(port: int, body: bytes) -> int:
    """A healthy /predict on a new connection; its status (a timeout fails the test)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=PROBE_TIMEOUT)
    try:
        conn.request("POST", "/predict", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_slow_and_idle_clients_neither_hold_up_healthy_requests_nor_stay(server):
    port, body = server
    head = b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    slow = (
        # 4 sending a header line every 2 s
        [SlowClient(port, [head] + [b"X-Slow: %d\r\n" % i for i in range(20)]) for _ in range(4)]
        # 8 sending one header byte every 2 s
        + [SlowClient(port, [bytes([b]) for b in head]) for _ in range(8)]
        # 4 sending their body a few bytes every 2 s
        + [SlowClient(port, [head + b"Content-Length: %d\r\n\r\n" % len(body)]
                      + [body[i:i + 4] for i in range(0, len(body), 4)]) for _ in range(4)]
    )
    idle = [SlowClient(port, []) for _ in range(32)]
    for client in slow + idle:
        client.start()
    try:
        time.sleep(1)  # every slow client has sent its first bytes and is waiting for its next
        assert [probe(port, body) for _ in range(4)] == [200] * 4
        assert all(not c.closed.is_set() for c in slow), "the slow clients must still be connected"
        # Past the read timeout every one of them is cut off, the slow ones with a 408.
        for client in slow + idle:
            assert client.closed.wait(READ_TIMEOUT + 10), "a slow or idle client was never disconnected"
        for client in slow:
            assert client.received.startswith(b"HTTP/1.1 408 "), client.received[:100]
        assert all(c.received == b"" for c in idle)
        assert [probe(port, body) for _ in range(4)] == [200] * 4
    finally:
        for client in slow + idle:
            client.stop.set()


class Answers:
    """HTTP answers read off one connection, in order (Content-Length framed, as the server
    writes them)."""

    def __init__(self, sock: socket.socket):
        self.sock, self.data = sock, b""

    def _more(self, what: str) -> None:
        chunk = self.sock.recv(65536)
        assert chunk, f"connection closed while reading {what}: {self.data[:200]!r}"
        self.data += chunk

    def next(self) -> tuple[int, dict, bytes]:
        while b"\r\n\r\n" not in self.data:
            self._more("a head")
        head, _, self.data = self.data.partition(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
        length = int(headers.get("content-length", 0))
        while len(self.data) < length:
            self._more("a body")
        body, self.data = self.data[:length], self.data[length:]
        return int(status_line.split()[1]), headers, body


def post(body: bytes, extra: bytes = b"") -> bytes:
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n%s"
            b"Content-Length: %d\r\n\r\n%s" % (extra, len(body), body))


def chunked(body: bytes, size: int = 100) -> bytes:
    parts = [b"%x\r\n%s\r\n" % (len(body[i:i + size]), body[i:i + size]) for i in range(0, len(body), size)]
    return (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + b"".join(parts) + b"0\r\n\r\n")


def test_kept_alive_pipelined_and_expect_continue_requests(server):
    port, body = server
    with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
        answers = Answers(sock)
        first = None
        for _ in range(20):  # one connection, one request after another
            sock.sendall(post(body))
            status, headers, answer = answers.next()
            assert status == 200 and headers["connection"] == "keep-alive"
            first = first or answer
            assert json.loads(answer)["predictions"] == json.loads(first)["predictions"]
        sock.sendall(post(body) + chunked(body, 50) + post(body))  # three at once
        assert [answers.next()[0] for _ in range(3)] == [200] * 3
        sock.sendall(post(body, b"Expect: 100-continue\r\n")[:-len(body)])
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(body)
        status, _, answer = answers.next()
        assert status == 200 and json.loads(answer)["predictions"] == json.loads(first)["predictions"]


@pytest.mark.parametrize("request_bytes, status", [
    (chunked(b'{"flights": []}'), 400),  # a chunked body reaches validation
    (chunked(b"x" * (MAX_BODY_BYTES + 1), 8192), 413),
    (post(b"x" * (MAX_BODY_BYTES + 1)), 413),
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
     b"\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", 400),  # not a chunk size
    (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked"
     b"\r\n\r\n2\r\n{}XX0\r\n\r\n", 400),  # no CRLF after the chunk
    # A head over the loop's limit, its end still to come: answered at once, no thread waits for it.
    (b"POST /predict HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-Pad-%d: %s\r\n" % (i, b"a" * 4000) for i in range(20)),
     431),
])
def test_bodies_the_server_cannot_take_are_4xx(server, request_bytes, status):
    port, _ = server
    with socket.create_connection(("127.0.0.1", port), timeout=PROBE_TIMEOUT) as sock:
        sock.sendall(request_bytes)
        answer_status, headers, answer = Answers(sock).next()
    assert answer_status == status, answer[:300]
    assert status == 400 or headers.get("connection") == "close"
