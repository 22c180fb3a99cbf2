"""HTTP transports: a raw-socket Server-Sent Events client (GET /events) and
POST /api/publish helpers, on top of harness.RawWS's socket handling.

- SseStream(port, channels, token=..., last_event_id=..., headers=...,
  rcvbuf=...): open() sends the request and returns the HTTP head
  (harness.HttpReply); next_event() parses the text/event-stream as
  EventSource does (WHATWG rules: "event", "data" lines joined with "\\n",
  "id", "retry"; comment lines are kept in .comments).
- api_publish(port, body, key=...): POST /api/publish, returns
  (status, parsed JSON or text body).
- api_raw(port, raw_bytes): exact bytes out, the HTTP reply back.
"""

import json
import socket
import time
import urllib.parse

import harness
from harness import RawWS


class SseEvent:
    def __init__(self, event, data, id, retry):
        self.event = event      # "message" when the stream named none
        self.data = data        # str
        self.id = id            # the last id seen so far (EventSource's lastEventId)
        self.retry = retry

    def json(self):
        return json.loads(self.data)

    def __repr__(self):
        return "SseEvent(%s, %r, id=%r)" % (self.event, self.data[:200], self.id)


class SseStream(RawWS):
    def __init__(self, port, channels, token=None, last_event_id=None, headers=None,
                 query=None, rcvbuf=None, host="127.0.0.1", timeout=harness.TIMEOUT):
        super().__init__(port, host=host, timeout=timeout, rcvbuf=rcvbuf)
        params = [("channel", c) for c in channels]
        if token is not None:
            params.append(("token", token))
        for k, v in (query or {}).items():
            params.append((k, v))
        self.path = "/events?" + urllib.parse.urlencode(params)
        self.headers = [("Host", "%s:%d" % (host, port)), ("Accept", "text/event-stream")]
        if last_event_id is not None:
            self.headers.append(("Last-Event-ID", last_event_id))
        self.headers += list((headers or {}).items())
        self.comments = []
        self.last_id = ""
        self.retry = None

    def open(self, method="GET"):
        raw = ("%s %s HTTP/1.1\r\n" % (method, self.path) +
               "".join("%s: %s\r\n" % kv for kv in self.headers) + "\r\n").encode()
        self.send(raw)
        r = self.read_http()
        # A proxy (nginx) may pass the stream on chunked.
        self.chunked = (r.header("transfer-encoding") or "").lower() == "chunked"
        if self.chunked:
            self.raw, self.buf = self.buf, b""
            self._dechunk()
        return r

    def _dechunk(self):
        """Moves the complete chunks of self.raw into self.buf; False at the last chunk."""
        while True:
            i = self.raw.find(b"\r\n")
            if i < 0:
                return True
            size = int(self.raw[:i].split(b";")[0], 16)
            if size == 0:
                return False
            if len(self.raw) < i + 2 + size + 2:
                return True
            self.buf += self.raw[i + 2:i + 2 + size]
            self.raw = self.raw[i + 2 + size + 2:]

    def _fill(self, deadline):
        if not getattr(self, "chunked", False):
            return super()._fill(deadline)
        decoded, self.buf = self.buf, self.raw
        try:
            more = super()._fill(deadline)
        finally:
            self.raw, self.buf = self.buf, decoded
        return self._dechunk() and more

    def _line(self, deadline):
        while b"\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError("stream ended; unparsed %r" % self.buf[:200])
        line, self.buf = self.buf.split(b"\n", 1)
        assert not line.endswith(b"\r"), "the gateway ends lines with LF only"
        return line.decode("utf-8")

    def next_event(self, timeout=None):
        """The next dispatched event (blocks of comments only are not events)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        event, data = "", []
        while True:
            line = self._line(deadline)
            if line == "":
                if data:
                    return SseEvent(event or "message", "\n".join(data), self.last_id,
                                    self.retry)
                event = ""
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                self.last_id = value
            elif name == "retry":
                self.retry = int(value)

    def next_json(self, timeout=None, skip_subscribed=False):
        while True:
            e = self.next_event(timeout)
            if skip_subscribed and e.event == "subscribed":
                continue
            return e.json()

    def opened(self, count=None, timeout=None):
        """After a 200: the "connected" event, then a "subscribed" per channel
        (count, default all of them); returns them as [connected, subs...]."""
        out = [self.next_event(timeout)]
        assert out[0].event == "connected", out[0]
        want = len([p for p in self.path.split("&") if "channel=" in p]) if count is None else count
        subs = {}
        while len(subs) < want:
            e = self.next_event(timeout)
            assert e.event == "subscribed", "expected subscribed, got %r" % e
            subs[e.json()["channel"]] = e
        return out + list(subs.values())

    def ended(self, timeout=5.0):
        """True when the gateway ends the stream within timeout (reads on)."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
            return True
        except socket.timeout:
            return False


def api_raw(port, raw, timeout=10.0):
    c = RawWS(port, timeout=timeout)
    try:
        c.send(raw)
        return c.read_http(timeout)
    finally:
        c.close()


def api_publish(port, body, key=None, headers=None, timeout=10.0):
    """POST /api/publish with body (a dict/list: JSON-encoded; str/bytes: as
    is). Returns (status, JSON body or text)."""
    if not isinstance(body, (bytes, str)):
        body = json.dumps(body)
    if isinstance(body, str):
        body = body.encode()
    hdrs = [("Host", "127.0.0.1:%d" % port), ("Content-Type", "application/json"),
            ("Content-Length", str(len(body)))]
    if key is not None:
        hdrs.append(("Authorization", "apikey " + key))
    hdrs += list((headers or {}).items())
    raw = ("POST /api/publish HTTP/1.1\r\n" + "".join("%s: %s\r\n" % kv for kv in hdrs) +
           "\r\n").encode() + body
    r = api_raw(port, raw, timeout)
    text = r.body.decode("utf-8", "replace")
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text
