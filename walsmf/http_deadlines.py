"""walsmf.serve's header deadline: a client has HEADER_SECONDS to send a request's headers (from the connection's
opening, or from its previous answer on a kept-alive connection); past it, a 408 and the connection closes.

uvicorn has no such deadline: a client sending a header a byte a second held its connection (and a file
descriptor of the worker) for as long as it liked.  (The body's deadline is the application's, in walsmf.serve.)
Imported by walsmf.serve as it starts gunicorn, where the serving extra is installed.
"""
import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from walsmf.serve import late

HEADER_SECONDS = 10.0


def timeout_response(what, seconds):
    """The raw HTTP 408 sent when ``what`` did not arrive within ``seconds``; the connection closes after it."""
    body = json.dumps({"error": late(what, seconds)}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\ncontent-length: " +
            str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body)


class DeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing a connection whose next request's headers are not complete
    HEADER_SECONDS after it opened or after its last answer (a pipelined request being answered is never cut)."""

    def connection_made(self, transport):
        self.headers_completed = 0
        self.header_deadline = None
        super().connection_made(transport)
        self.arm_header_deadline()

    def arm_header_deadline(self):
        """(Re)start the clock for the next request's headers."""
        if self.header_deadline is not None:
            self.header_deadline.cancel()
        self.header_deadline = self.loop.call_later(HEADER_SECONDS, self.headers_too_slow, self.headers_completed)

    def headers_too_slow(self, completed_when_armed):
        """Answer 408 and close, unless a request's headers came meanwhile or a request is being answered."""
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.headers_completed == completed_when_armed and not answering and not self.transport.is_closing():
            self.transport.write(timeout_response("headers", HEADER_SECONDS))
            self.transport.close()

    def on_headers_complete(self):
        self.headers_completed += 1
        super().on_headers_complete()

    def on_response_complete(self):
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm_header_deadline()

    def connection_lost(self, exc):
        if self.header_deadline is not None:
            self.header_deadline.cancel()
        super().connection_lost(exc)


def worker_class():
    """The gunicorn worker class: uvicorn's worker (the uvicorn-worker package where installed, current Pythons;
    else the class uvicorn itself ships, its last Python 3.7 release) speaking DeadlineProtocol."""
    try:
        from uvicorn_worker import UvicornWorker
    except ImportError:
        from uvicorn.workers import UvicornWorker

    class DeadlineWorker(UvicornWorker):
        CONFIG_KWARGS = dict(UvicornWorker.CONFIG_KWARGS, http=DeadlineProtocol)

    return DeadlineWorker
