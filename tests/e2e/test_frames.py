"""RFC 6455 on the wire, with hand-built frames after a valid handshake."""

import json
import struct
import time

import pytest

from harness import (OP_BIN, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, RawWS, build_frame,
                     close_payload)

MAX = 1024
PING = b'{"type":"ping"}'


@pytest.fixture(scope="module")
def gw(start_gateway):
    return start_gateway(["--max-message-size", str(MAX)], name="gw-frames")


@pytest.fixture
def ws(gw):
    c = RawWS(gw.port)
    c.handshake()
    yield c
    c.close()


def assert_closed_with(ws, code, timeout=5):
    got, reason, frames = ws.read_until_close(timeout)
    assert got == code, "expected close %s, got %s (reason %r, frames before %r)" % (
        code, got, reason, frames)
    return frames


def text(payload, **kw):
    return build_frame(OP_TEXT, payload, **kw)


def test_masked_text_ping_is_answered(ws):
    ws.send(text(PING))
    msg = ws.read_json()
    assert msg["type"] == "pong"


def test_unmasked_frame_closes_1002(ws):
    ws.send(text(PING, mask=False))
    assert_closed_with(ws, 1002)


@pytest.mark.parametrize("rsv", [1, 2, 4])
def test_rsv_bit_closes_1002(ws, rsv):
    ws.send(text(PING, rsv=rsv))
    assert_closed_with(ws, 1002)


@pytest.mark.parametrize("opcode", [3, 7, 0xB, 0xF])
def test_reserved_opcode_closes_1002(ws, opcode):
    ws.send(build_frame(opcode, b"x"))
    assert_closed_with(ws, 1002)


def test_ping_frame_gets_pong_with_same_payload(ws):
    ws.send(build_frame(OP_PING, b"hello"))
    op, payload = ws.read_message()
    assert (op, payload) == (OP_PONG, b"hello")


def test_empty_ping_gets_empty_pong(ws):
    ws.send(build_frame(OP_PING, b""))
    assert ws.read_message() == (OP_PONG, b"")


def test_unsolicited_pong_is_ignored(ws):
    ws.send(build_frame(OP_PONG, b"whatever"))
    ws.send(text(PING))
    assert ws.read_json()["type"] == "pong"


def test_control_frame_with_126_byte_payload_closes_1002(ws):
    ws.send(build_frame(OP_PING, b"a" * 126))
    assert_closed_with(ws, 1002)


def test_control_frame_with_125_byte_payload_is_fine(ws):
    ws.send(build_frame(OP_PING, b"a" * 125))
    assert ws.read_message() == (OP_PONG, b"a" * 125)


def test_fragmented_ping_closes_1002(ws):
    ws.send(build_frame(OP_PING, b"hi", fin=False))
    assert_closed_with(ws, 1002)


def test_continuation_without_start_closes_1002(ws):
    ws.send(build_frame(OP_CONT, PING))
    assert_closed_with(ws, 1002)


def test_new_text_frame_inside_fragmented_message_closes_1002(ws):
    ws.send(text(PING[:5], fin=False) + text(PING))
    assert_closed_with(ws, 1002)


def test_fragmented_text_with_ping_between_is_reassembled(ws):
    msg = b'{"type":"ping","id":"frag"}'
    a, b, c = msg[:6], msg[6:15], msg[15:]
    ws.send(text(a, fin=False))
    ws.send(build_frame(OP_PING, b"mid"))
    ws.send(build_frame(OP_CONT, b, fin=False))
    ws.send(build_frame(OP_CONT, c, fin=True))
    op, payload = ws.read_message()
    assert (op, payload) == (OP_PONG, b"mid")
    reply = ws.read_json()
    assert reply["type"] == "pong" and reply["id"] == "frag", reply


def test_fragments_sent_in_one_write_are_reassembled(ws):
    data = b"".join([text(PING[:1], fin=False)] +
                    [build_frame(OP_CONT, PING[i:i + 1], fin=False) for i in range(1, len(PING) - 1)]
                    + [build_frame(OP_CONT, PING[-1:])])
    ws.send(data)
    assert ws.read_json()["type"] == "pong"


def test_frame_bytes_trickled_one_at_a_time_are_parsed(ws):
    for byte in text(PING):
        ws.send(bytes([byte]))
        time.sleep(0.001)
    assert ws.read_json()["type"] == "pong"


def test_several_frames_in_one_write_are_all_answered(ws):
    ws.send(b"".join(text(json.dumps({"type": "ping", "id": i}).encode()) for i in range(10)))
    for i in range(10):
        assert ws.read_json()["id"] == i


@pytest.mark.parametrize("payload", [
    b'{"type":"\xff"}', b'{"type":"ping","id":"\xc3\x28"}', b'{"type":"ping","id":"\xed\xa0\x80"}',
    b'{"type":"ping","id":"\xc0\xaf"}', b'{"type":"ping","id":"\xf4\x90\x80\x80"}',
], ids=["ff", "bad_continuation", "surrogate", "overlong", "above_10ffff"])
def test_invalid_utf8_text_closes_1007(ws, payload):
    ws.send(text(payload))
    assert_closed_with(ws, 1007)


def test_invalid_utf8_in_fragmented_text_closes_1007(ws):
    ws.send(text(b'{"type":"ping","id":"', fin=False))
    ws.send(build_frame(OP_CONT, b'\xff"}'))
    assert_closed_with(ws, 1007)


def test_utf8_sequence_split_across_fragments_is_accepted(ws):
    msg = '{"type":"ping","id":"é𝄞"}'.encode()
    cut = msg.index("é".encode()) + 1          # inside the 2-byte sequence
    cut2 = msg.index("𝄞".encode()) + 2         # inside the 4-byte sequence
    ws.send(text(msg[:cut], fin=False))
    ws.send(build_frame(OP_CONT, msg[cut:cut2], fin=False))
    ws.send(build_frame(OP_CONT, msg[cut2:]))
    reply = ws.read_json()
    assert reply["type"] == "pong" and reply["id"] == "é𝄞", reply


def test_binary_frame_closes_1003(ws):
    ws.send(build_frame(OP_BIN, b"\x00\x01\x02"))
    assert_closed_with(ws, 1003)


def test_message_of_exactly_max_size_is_answered(ws):
    msg = PING + b" " * (MAX - len(PING))
    assert len(msg) == MAX
    ws.send(text(msg))
    assert ws.read_json()["type"] == "pong"


def test_message_one_byte_over_max_size_closes_1009(ws):
    msg = PING + b" " * (MAX + 1 - len(PING))
    ws.send(text(msg))
    assert_closed_with(ws, 1009)


def test_fragmented_message_over_max_size_closes_1009(ws):
    part = b" " * 600
    ws.send(text(PING + part, fin=False))
    ws.send(build_frame(OP_CONT, part))
    assert_closed_with(ws, 1009)


def test_huge_announced_length_closes_1009_without_waiting_for_body(ws):
    ws.send(build_frame(OP_TEXT, b"abcd", length=1 << 30)[:2 + 8 + 4 + 4])
    t0 = time.monotonic()
    assert_closed_with(ws, 1009, timeout=3)
    assert time.monotonic() - t0 < 2


def test_64bit_length_with_high_bit_set_is_refused(ws):
    frame = struct.pack("!BBQ", 0x81, 0x80 | 127, 1 << 63) + b"\x00\x00\x00\x00"
    ws.send(frame)
    code, _, _ = ws.read_until_close(3)
    assert code in (1002, 1009), code


def test_close_1000_is_echoed_and_tcp_closed(ws):
    ws.send(build_frame(OP_CLOSE, close_payload(1000, "bye")))
    assert_closed_with(ws, 1000)
    assert ws.tcp_closed(3), "server kept TCP open after the close handshake"


def test_empty_close_is_answered_and_tcp_closed(ws):
    ws.send(build_frame(OP_CLOSE, b""))
    code, _, frames = ws.read_until_close()
    assert code in (1005, 1000), "expected an empty close or 1000, got %r" % code
    assert frames == []
    assert ws.tcp_closed(3)


@pytest.mark.parametrize("code", [1005, 999, 1006, 1015, 0, 2999, 5000])
def test_close_with_invalid_code_closes_1002(ws, code):
    ws.send(build_frame(OP_CLOSE, close_payload(code)))
    assert_closed_with(ws, 1002)


@pytest.mark.parametrize("code", [1001, 3000, 4001, 4999])
def test_close_with_valid_code_is_answered_normally(ws, code):
    ws.send(build_frame(OP_CLOSE, close_payload(code)))
    got, _, _ = ws.read_until_close()
    assert got in (code, 1000), got


def test_close_with_one_byte_payload_closes_1002(ws):
    ws.send(build_frame(OP_CLOSE, b"\x03"))
    assert_closed_with(ws, 1002)


def test_close_reason_invalid_utf8_closes_1007(ws):
    ws.send(build_frame(OP_CLOSE, close_payload(1000, b"\xff\xfe")))
    assert_closed_with(ws, 1007)


def test_data_after_close_is_ignored(ws):
    ws.send(build_frame(OP_CLOSE, close_payload(1000)) + text(PING) + build_frame(OP_PING, b"x"))
    frames = assert_closed_with(ws, 1000)
    assert frames == []
    ws.tcp_closed(3)
    assert ws.buf == b"", "server sent bytes after its close frame: %r" % ws.buf


def test_client_closing_tcp_abruptly_does_not_hurt_gateway(gw):
    for _ in range(5):
        c = RawWS(gw.port)
        c.handshake()
        c.send(text(PING)[:5])
        c.close()
    with RawWS(gw.port) as c:
        c.handshake()
        c.send(text(PING))
        assert c.read_json()["type"] == "pong"


def test_default_limit_accepts_65536_and_refuses_65537(gateway):
    # the module's default gateway runs without --max-message-size (65536, inclusive)
    with RawWS(gateway.port) as c:
        c.handshake()
        c.send(text(PING + b" " * (65536 - len(PING))))
        assert c.read_json()["type"] == "pong"
        c.send(text(PING + b" " * (65537 - len(PING))))
        assert_closed_with(c, 1009)
