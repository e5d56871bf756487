"""walsmf.serve's HTTP on a real uvicorn server in this process, on loopback: read deadlines (walsmf.http_deadlines's
headers, walsmf.serve's body; shortened here) close late requests with a 408 and never cut a prompt or pipelined
one; HEAD answers GET routes; an error quoting a huge request stays short."""
import asyncio
import json
import socket
import threading
import time

import pytest
import uvicorn
from helpers import free_ports

from walsmf import http_deadlines, serve


class Served:
    """A model answering each instance with its userId, after ``pause`` seconds."""
    pause = 0.0

    class model:
        version, info = "1", {}

        @staticmethod
        def answer(instances, parameters=None):
            time.sleep(Served.pause)
            return [{"userId": row.get("userId")} for row in instances]


@pytest.fixture
def port(monkeypatch):
    monkeypatch.setattr(http_deadlines, "HEADER_SECONDS", 0.5)
    monkeypatch.setattr(serve, "BODY_SECONDS", 0.5)
    number = free_ports(1)[0]
    config = uvicorn.Config(serve.application(Served(), environ={}), host="127.0.0.1", port=number,
                            http=http_deadlines.DeadlineProtocol, lifespan="off", log_level="error")
    server = uvicorn.Server(config)

    def run():
        asyncio.set_event_loop(asyncio.new_event_loop())
        server.run()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    yield number
    server.should_exit = True
    thread.join(10)


def exchange(port, parts, pause=0.0, wait=5.0):
    """Send ``parts`` ``pause`` s apart, then read until the server closes: (what it said, seconds taken)."""
    started = time.time()
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as connection:
        for part in parts:
            try:
                connection.sendall(part)
            except OSError:  # closed by the server: read what it said
                break
            time.sleep(pause)
        said = b""
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                return said, time.time() - started
            said += chunk


def request(body, extra=b""):
    return b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n%s\r\n%s" % (len(body), extra, body)


def test_slow_headers_and_bodies_get_a_408_and_are_closed(port):
    said, took = exchange(port, [b"POST /predict HTTP/1.1\r\nHost: x\r\nX-Slow: a"] + [b"a"] * 5, pause=0.2)
    assert said.startswith(b"HTTP/1.1 408") and b"headers did not arrive within 0.5 s" in said and took < 2.5
    said, _ = exchange(port, [])  # a connection that never says anything
    assert said.startswith(b"HTTP/1.1 408")
    body = json.dumps({"instances": [{"userId": 3}]}).encode()
    said, took = exchange(port, [request(body)[:-4]])  # four bytes of the body never come
    assert said.startswith(b"HTTP/1.1 408") and b"body did not arrive within 0.5 s" in said and took < 2.5
    assert said.count(b"HTTP/1.1") == 1
    # a body announced over the limit is drained before its 413, but only until the body's deadline
    said, took = exchange(port, [b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n{" %
                                 (2 * serve.MAX_REQUEST_BYTES)])
    assert said.startswith(b"HTTP/1.1 413") and b"connection: close" in said and took < 2.5


def test_prompt_and_pipelined_requests_are_answered_whole(port):
    Served.pause = 0.4  # two answers take longer than the header deadline
    body = json.dumps({"instances": [{"userId": 3}]}).encode()
    try:
        said, _ = exchange(port, [request(body) + request(body, b"Connection: close\r\n")])
    finally:
        Served.pause = 0.0
    assert said.count(b"HTTP/1.1 200") == 2 and said.count(b'{"predictions": [{"userId": 3}]}') == 2
    # a kept-alive connection's second request, sent promptly, is answered; its idleness is closed after it
    said, _ = exchange(port, [request(body), request(body)], pause=0.2)
    assert said.count(b"HTTP/1.1 200") == 2 and said.endswith(b"within 0.5 s: send the whole request at once\"}")


def test_head_answers_a_get_route_without_its_body(port):
    said, _ = exchange(port, [b"HEAD /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    head, _, body = said.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and body == b""
    assert b"content-length: %d" % len(json.dumps({"status": "ok", "version": "1"})) in head
    said, _ = exchange(port, [b"HEAD /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    assert said.startswith(b"HTTP/1.1 405")


def test_an_error_quoting_a_huge_request_is_kept_short(port):
    said, _ = exchange(port, [b"GET /" + b"a" * 60000 + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"])
    head, _, body = said.partition(b"\r\n\r\n")
    error = json.loads(body.decode())["error"]
    assert head.startswith(b"HTTP/1.1 404") and error.startswith("no route /aaaa") and len(error) < 2100
    assert error.endswith("(see /v1/models/walsmf and /predict)")
