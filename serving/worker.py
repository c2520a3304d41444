"""gunicorn's worker for this server: gthread's thread pool, with each request read in full
before a thread takes it.

gunicorn's ``gthread`` worker gives a connection to a thread as soon as data arrives, and
the thread then reads the request from a blocking socket with no time limit: a client
that sends its headers a line (or a byte) at a time holds a thread for as long as it
likes, one that connects and sends nothing holds one for seconds, and a handful of them
leave healthy requests queued behind. Closing a connection also waits for the client's
side to close, in the worker's event loop.

:class:`ReadFirstWorker` reads in the event loop instead, without blocking: a connection
costs a buffer until its request (headers and body, by ``Content-Length`` or chunked) is
complete, and only then does a thread parse it (from the buffer) and run the app. Time
limits:

* a request must arrive within ``REQUEST_READ_TIMEOUT`` seconds (``serving/config.py``),
  counted from the connection, or from its first byte on a kept-alive connection; a late
  one is answered ``408`` and its connection closed;
* an idle kept-alive connection is closed after gunicorn's ``keepalive`` seconds;
* a thread's writes (and any read a malformed request still needs) wait at most the same
  timeout;
* a body over ``MAX_BODY_BYTES`` is answered ``413`` by the loop, without a thread, and a
  head over :data:`MAX_HEAD_BYTES` ``431``.

A connection whose client has nothing more unread is closed at once; one with unread bytes
is closed gracefully (our side first, then the client's bytes drained) in the event loop,
without blocking it. A new connection's request is read as soon as it is accepted (clients
send it at once), so most requests go to a thread without a trip through the poller.

Everything else (the thread pool, keep-alive, the arbiter's hooks and heartbeats, graceful
shutdown) is gthread's. HTTP/1.1 only, no TLS (a TLS-terminating proxy goes in front); the
worker refuses to start otherwise.
"""

from __future__ import annotations

import errno
import os
import re
import selectors
import socket
import sys
import time
from functools import partial

from gunicorn import http, util
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import gthread

from core.errors import ConfigError
from serving.config import MAX_BODY_BYTES, AuthConfig, WebConfig

#: Most bytes of a request head (request line and headers): past it the loop answers 431
#: itself (a thread given the head would wait for the rest before gunicorn's own limit).
MAX_HEAD_BYTES = 64 * 1024
#: Bytes read per readiness event (a larger body takes a few events).
RECV_BYTES = 64 * 1024
#: How long a connection being closed waits for the client's side to close.
LINGER_SECONDS = 2.0
#: How often, at most, the loop looks for late requests and expired connections.
SWEEP_SECONDS = 0.25
#: Seconds between two heartbeats to the arbiter (gunicorn beats on every turn of the loop,
#: a file-system call per request; the arbiter's ``timeout`` is tens of seconds).
HEARTBEAT_SECONDS = 1.0
#: gunicorn's own bound on a chunk-size line and on a trailer section (``http/body.py``).
MAX_CHUNK_LINE = 8190
MAX_TRAILERS = 8190 * 32

_CONTENT_LENGTH = re.compile(rb"^content-length[ \t]*:[ \t]*([^\r\n]*?)[ \t]*\r?$", re.I | re.M)
_TRANSFER_ENCODING = re.compile(rb"^transfer-encoding[ \t]*:", re.I | re.M)
_EXPECT_CONTINUE = re.compile(rb"^expect[ \t]*:[ \t]*100-continue[ \t]*\r?$", re.I | re.M)
_HEX = frozenset(b"0123456789abcdefABCDEF")

#: What :meth:`Conn.scan` finds in the buffer.
MORE, WHOLE, BROKEN, TOO_LARGE, HEAD_TOO_LARGE = "more", "whole", "broken", "too large", "head too large"


def _answer(status: str, message: str) -> bytes:
    """A complete HTTP answer with the app's error body ``{"error": ...}``, closing the connection."""
    body = b'{"error":"' + message.encode() + b'"}\n'
    return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n").encode() + body


TIMEOUT_ANSWER = _answer("408 Request Timeout", "the request did not arrive in time")
TOO_LARGE_ANSWER = _answer("413 Content Too Large", f"the body is larger than {MAX_BODY_BYTES} bytes")
HEAD_TOO_LARGE_ANSWER = _answer("431 Request Header Fields Too Large",
                                f"the request line and headers are larger than {MAX_HEAD_BYTES} bytes")
#: The loop's own answers, by what :meth:`Conn.scan` found.
REFUSALS = {TOO_LARGE: TOO_LARGE_ANSWER, HEAD_TOO_LARGE: HEAD_TOO_LARGE_ANSWER}


class DeadlineUnreader(SocketUnreader):
    """gunicorn's socket reader for one connection, holding what the loop buffered: a read
    from the socket (only a request the loop could not frame needs one) waits at most
    until ``deadline``; afterwards the socket gets the write timeout back."""

    def __init__(self, sock, write_timeout: float):
        super().__init__(sock)
        self.deadline = 0.0
        self.write_timeout = write_timeout

    def chunk(self, size_hint=None):
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout("the request did not arrive in time")
        self.sock.settimeout(left)
        try:
            return super().chunk(size_hint)
        finally:
            self.sock.settimeout(self.write_timeout)


class Conn(gthread.TConn):
    """A client connection, with the bytes of its next request as the loop received them."""

    def __init__(self, cfg, sock, client, server):
        super().__init__(cfg, sock, client, server)
        self.deadline = 0.0
        self.closing = False
        #: Whether the request given to a thread was complete (else it is closed after).
        self.whole = False
        self.reset(b"")

    def reset(self, data: bytes) -> None:
        """Start on the next request, whose first bytes (read ahead) are ``data``."""
        self.buf = bytearray(data)
        self.head_end = -1   # index just past the head's blank line, once found
        self.searched = 0    # where the search for the blank line resumes
        self.chunk_at = -1   # chunked body: where the next chunk-size line starts
        self.chunk_total = 0
        self.continued = False

    def scan(self) -> str:
        """Whether :attr:`buf` holds a whole request (:data:`WHOLE`), needs more
        (:data:`MORE`), cannot be framed (:data:`BROKEN`: a thread lets gunicorn's parser
        answer it, from the buffer) or is over a limit (:data:`TOO_LARGE`: the body,
        :data:`HEAD_TOO_LARGE`: the head)."""
        buf = self.buf
        if self.head_end < 0:
            end = buf.find(b"\r\n\r\n", self.searched)
            if end < 0:
                self.searched = max(0, len(buf) - 3)
                return HEAD_TOO_LARGE if len(buf) > MAX_HEAD_BYTES else MORE
            self.head_end = end + 4
            head = bytes(buf[:end])
            lengths = _CONTENT_LENGTH.findall(head)
            chunked = _TRANSFER_ENCODING.search(head) is not None
            if chunked and lengths or len(lengths) > 1 or lengths and not lengths[0].isdigit():
                return BROKEN
            self.length = int(lengths[0]) if lengths else 0
            if chunked:
                self.chunk_at = self.head_end
            elif self.length > MAX_BODY_BYTES:
                return TOO_LARGE
            self.expects_continue = _EXPECT_CONTINUE.search(head) is not None
        if self.chunk_at >= 0:
            return self._scan_chunks()
        return WHOLE if len(buf) - self.head_end >= self.length else MORE

    def _scan_chunks(self) -> str:
        """Follow the chunked body from :attr:`chunk_at` as far as the buffer goes."""
        buf = self.buf
        while True:
            eol = buf.find(b"\r\n", self.chunk_at)
            if eol < 0:
                return BROKEN if len(buf) - self.chunk_at > MAX_CHUNK_LINE else MORE
            size = bytes(buf[self.chunk_at:eol]).split(b";", 1)[0].rstrip(b" \t")
            if not size or not _HEX.issuperset(size) or len(size) > 16:
                return BROKEN
            size = int(size, 16)
            if size == 0:
                if buf[eol + 2:eol + 4] == b"\r\n" or buf.find(b"\r\n\r\n", eol + 2) >= 0:
                    return WHOLE
                return BROKEN if len(buf) - eol > MAX_TRAILERS else MORE
            if self.chunk_total + size > MAX_BODY_BYTES:
                return TOO_LARGE
            end = eol + 2 + size
            if len(buf) < end + 2:
                return MORE
            if buf[end:end + 2] != b"\r\n":
                return BROKEN
            self.chunk_total += size
            self.chunk_at = end + 2


class ReadFirstWorker(gthread.ThreadWorker):
    """gthread, with requests read by the event loop and bounded in time (module docstring)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.read_timeout = WebConfig.from_env(os.environ).read_timeout
        #: Connections the loop reads from (a request arriving, idle kept-alive, closing).
        self.waiting: dict[Conn, None] = {}
        self.next_sweep = 0.0
        self.next_heartbeat = 0.0

    def notify(self):
        """The heartbeat the arbiter watches, at most every :data:`HEARTBEAT_SECONDS`."""
        now = time.monotonic()
        if now >= self.next_heartbeat:
            self.next_heartbeat = now + HEARTBEAT_SECONDS
            super().notify()

    def init_process(self):
        if self.cfg.is_ssl or self.cfg.http_protocols != ["h1"]:
            self.log.error("serving.worker.ReadFirstWorker serves plain HTTP/1.1: put a TLS proxy in front")
            sys.exit(self.WORKER_BOOT_ERROR)
        self._refuse_open_bind_without_token()
        super().init_process()

    def _refuse_open_bind_without_token(self) -> None:
        """The check ``serving serve`` makes on ``HOST``, on the addresses actually bound (a
        ``--bind`` given to gunicorn directly does not go through ``HOST``)."""
        for listener in self.sockets:
            address = listener.getsockname()
            host = address[0] if isinstance(address, tuple) else "localhost"  # a Unix socket
            try:
                AuthConfig.from_env(os.environ, host)
            except ConfigError as e:
                self.log.error("refusing to serve on %s: %s", listener, e)
                sys.exit(self.WORKER_BOOT_ERROR)

    # -- the event loop: reading requests --------------------------------------------

    def accept(self, listener):
        try:
            sock, client = listener.accept()
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                raise
            return
        self.nr_conns += 1
        conn = Conn(self.cfg, sock, client, listener.getsockname())
        conn.deadline = time.monotonic() + self.read_timeout
        # A client usually sends its request right after connecting: read it now, and wait
        # for readiness only if it is not all here yet.
        self._receive(conn)

    def _wait(self, conn: Conn) -> None:
        self.waiting[conn] = None
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._readable, conn))

    def _unwait(self, conn: Conn) -> None:
        self.waiting.pop(conn, None)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass

    def _readable(self, conn: Conn, _sock) -> None:
        self._receive(conn)

    def _receive(self, conn: Conn) -> None:
        """Read what has arrived (never blocking); hand a whole request to a thread, answer
        one over a limit, or wait for more."""
        try:
            data = conn.sock.recv(RECV_BYTES, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            if conn not in self.waiting:
                self._wait(conn)
            return
        except OSError:
            data = b""
        if conn.closing:
            if not data:
                self._close(conn)
            return
        if not data:
            self._close(conn)  # the client went away
            return
        if not conn.buf and conn.parser is not None:
            # The first byte of a request on a kept-alive connection: its time starts now.
            conn.deadline = time.monotonic() + self.read_timeout
        conn.buf += data
        found = conn.scan()
        if found == MORE:
            if conn.head_end >= 0 and conn.expects_continue and not conn.continued:
                conn.continued = True
                self._send(conn, b"HTTP/1.1 100 Continue\r\n\r\n")
            if conn not in self.waiting:
                self._wait(conn)
            return
        if found in REFUSALS:
            self._send(conn, REFUSALS[found])
            self._linger(conn)
            return
        self._unwait(conn)
        conn.whole = found == WHOLE
        self.enqueue_req(conn)

    @staticmethod
    def _nothing_unread(conn: Conn) -> bool:
        """Whether no byte from the client waits unread (closing a socket with unread bytes
        resets the connection, and the client may lose the answer it has not read yet)."""
        try:
            return not conn.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return True

    @staticmethod
    def _send(conn: Conn, data: bytes) -> None:
        """Best effort, without blocking: a short answer fits an empty socket buffer."""
        try:
            conn.sock.send(data)
        except OSError:
            pass

    def _linger(self, conn: Conn) -> None:
        """Close gracefully without blocking the loop: send our FIN, then read and drop the
        client's bytes until it closes too (or :data:`LINGER_SECONDS`), so the kernel does
        not reset the connection before the client has read our last answer."""
        self._unwait(conn)
        try:
            conn.sock.setblocking(False)
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.closing = True
        conn.deadline = time.monotonic() + LINGER_SECONDS
        self._wait(conn)

    def _close(self, conn: Conn) -> None:
        self._unwait(conn)
        self.nr_conns -= 1
        util.close(conn.sock)

    def murder_keepalived(self, force: bool = False):
        """Close what is past its time: a late request (answered 408 first), an idle
        kept-alive connection, a lingering close; everything when ``force``."""
        now = time.monotonic()
        if not force and now < self.next_sweep:
            return
        self.next_sweep = now + SWEEP_SECONDS
        for conn in [c for c in self.waiting if force or c.deadline <= now]:
            if conn.buf and not conn.closing and not force:
                self._send(conn, TIMEOUT_ANSWER)
                self._linger(conn)
            else:
                self._close(conn)

    def murder_pending(self):
        """gthread's pending connections do not exist here (:meth:`murder_keepalived`)."""

    def _cap_keepalive(self, deadline):
        """Stopping: connections between requests close by ``deadline`` at the latest."""
        for conn in self.waiting:
            if not conn.buf:
                conn.deadline = min(conn.deadline, deadline)

    # -- after a thread: keep the connection, or close it ----------------------------

    def finish_request(self, conn: Conn, fs):
        try:
            keep = bool(fs.result()) if not fs.cancelled() else False
        except Exception:
            keep = False
        if not keep:
            if conn.whole and self._nothing_unread(conn):
                self._close(conn)  # nothing for the kernel to reset the answer over
            else:
                self._linger(conn)
            return
        try:
            ahead = conn.parser.unreader.take_buffered()
            conn.sock.setblocking(False)
        except OSError:
            self._close(conn)
            return
        conn.reset(ahead)
        now = time.monotonic()
        if ahead:
            conn.deadline = now + self.read_timeout
            found = conn.scan()
            if found in (WHOLE, BROKEN):
                conn.whole = found == WHOLE
                self.enqueue_req(conn)
                return
            if found in REFUSALS:
                self._send(conn, REFUSALS[found])
                self._linger(conn)
                return
        else:
            conn.deadline = now + (self.cfg.keepalive if self.alive
                                   else min(self.cfg.keepalive, gthread.STOP_KEEPALIVE_LINGER))
        self._wait(conn)

    # -- in a thread: parse the buffered request and run the app ---------------------

    def handle(self, conn: Conn):
        """Parse the request from what the loop buffered and answer it; True: keep the
        connection for the next request."""
        req = None
        try:
            conn.sock.settimeout(self.read_timeout)  # blocking, for writes; reads: DeadlineUnreader
            if conn.parser is None:
                conn.initialized = True
                conn.parser = http.get_parser(self.cfg, conn.sock, conn.client)
                conn.parser.unreader = DeadlineUnreader(conn.sock, self.read_timeout)
            conn.parser.unreader.deadline = conn.deadline
            conn.parser.unreader.unread(bytes(conn.buf))
            conn.buf = bytearray()
            req = next(conn.parser)
            if not req:
                return False
            # The loop answered "100 Continue" if the client waited for it; the body is here.
            req._expected_100_continue = False
            keep = self.handle_request(req, conn)
            # A body the app did not read is in the buffer (the request was whole): drop it.
            return keep and conn.whole and bool(conn.parser.finish_body())
        except http.errors.NoMoreData as e:
            self.log.debug("Ignored premature client disconnection. %s", e)
        except StopIteration as e:
            self.log.debug("Closing connection. %s", e)
        except (socket.timeout, TimeoutError):
            self.log.debug("A client took too long to send its request or read the answer.")
        except OSError as e:
            if e.errno not in (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN):
                self.log.exception("Socket error processing request.")
        except Exception as e:
            self.handle_error(req, conn.sock, conn.client, e)
        return False
