"""The wire protocol on the real socket: framing, pipelining, and every kind of bad input."""

import json
import socket
import struct
import time

from conftest import RawConn


def test_hello_and_ping(shared_daemon):
    with RawConn(shared_daemon.socket) as c:
        hello = c.call({"op": "hello", "id": 1, "client": "test", "protocol": 1})
        assert hello["ok"] and hello["id"] == 1
        assert hello["result"]["server"] == "budgetd" and hello["result"]["protocol"] == 1
        assert {"hello", "ping", "record", "usage.list", "status", "prices.get", "prices.list"} <= set(
            hello["result"]["ops"]
        )
        assert c.call({"op": "ping", "id": "abc"}) == {"id": "abc", "ok": True, "result": {}}
        assert c.call({"op": "ping"}) == {"id": None, "ok": True, "result": {}}
        wrong = c.call({"op": "hello", "id": 2, "protocol": 7})
        assert wrong["error"]["code"] == "invalid" and wrong["error"]["field"] == "$.protocol"


def test_pipelined_requests_are_answered_by_id(shared_daemon):
    with RawConn(shared_daemon.socket) as c:
        frames = []
        for i in range(60):
            if i % 3 == 0:
                frames.append({"op": "ping", "id": i})
            elif i % 3 == 1:
                frames.append({"op": "record", "id": i, "usage": {"component": "pipe", "model": "gpt-4o",
                                                                   "input_tokens": i}})
            else:
                frames.append({"op": "prices.get", "id": f"p{i}", "model": "gpt-4o"})
        c.send(b"".join(json.dumps(f).encode() + b"\n" for f in frames))
        answers = {}
        for _ in frames:
            a = c.recv()
            answers[a["id"]] = a
        assert set(answers) == {f["id"] for f in frames}
        assert all(a["ok"] for a in answers.values())
        assert answers[1]["result"]["cost_usd"] == 2_500 / 1e9
        assert answers["p2"]["result"]["price"]["input_per_mtok"] == 2.5


def error_of(conn, frame) -> dict:
    answer = conn.call(frame) if isinstance(frame, dict) else (conn.send(frame), conn.recv())[1]
    assert answer["ok"] is False, answer
    return answer


def test_bad_frames_get_errors_and_the_connection_stays_usable(shared_daemon):
    with RawConn(shared_daemon.socket) as c:
        assert error_of(c, b"this is not json\n")["error"]["code"] == "bad_frame"
        assert error_of(c, b"[1, 2, 3]\n")["error"]["code"] == "bad_frame"
        assert error_of(c, b'{"op": "ping", "id": 1\n')["error"]["code"] == "bad_frame"
        assert error_of(c, b'{"op": "record", "id": 9, "usage": {"component": "c", "model": "m", "cost_usd": NaN}}\n')["error"]["code"] == "bad_frame"
        missing = error_of(c, {"id": 5})
        assert missing["id"] == 5 and missing["error"]["code"] == "invalid" and "op" in missing["error"]["message"]
        unknown = error_of(c, {"op": "explode", "id": 6})
        assert unknown["id"] == 6 and unknown["error"]["code"] == "unknown_op"
        assert "explode" in unknown["error"]["message"]
        assert c.call({"op": "ping", "id": 7})["ok"]


def test_frame_too_large_is_skipped_to_its_newline(shared_daemon):
    with RawConn(shared_daemon.socket) as c:
        huge = b'{"op": "ping", "id": 1, "pad": "' + b"x" * (2 << 20) + b'"}\n'
        c.send(huge + b'{"op": "ping", "id": 2}\n')
        first = c.recv()
        assert first["ok"] is False and first["error"]["code"] == "frame_too_large"
        second = c.recv()
        assert second == {"id": 2, "ok": True, "result": {}}


def test_invalid_fields_are_named(shared_daemon):
    def usage(**fields):
        base = {"component": "c", "model": "gpt-4o"}
        base.update(fields)
        return {"op": "record", "id": 1, "usage": base}

    cases = [
        (usage(input_tokens=-1), "$.usage.input_tokens"),
        (usage(input_tokens=10**15), "$.usage.input_tokens"),
        (usage(output_tokens="12"), "$.usage.output_tokens"),
        (usage(input_tokens=1.5), "$.usage.input_tokens"),
        (usage(cost_usd=-0.5), "$.usage.cost_usd"),
        (usage(component="x" * 129), "$.usage.component"),
        (usage(model=""), "$.usage.model"),
        (usage(metadata={f"k{i}": i for i in range(33)}), "$.usage.metadata"),
        (usage(metadata={"k": {"nested": 1}}), "$.usage.metadata[...]"),
        (usage(ts="2026-11-28T10:00:00"), "$.usage.ts"),
        (usage(tier="gigantic"), "$.usage.tier"),
        (usage(surprise=1), "$.usage.surprise"),
        ({"op": "record", "id": 1}, "$"),
        ({"op": "record", "id": 1, "usage": {"model": "gpt-4o"}}, "$.usage"),
        ({"op": "usage.list", "id": 1, "limit": 0}, "$.limit"),
    ]
    with RawConn(shared_daemon.socket) as c:
        for frame, field in cases:
            answer = c.call(frame)
            assert answer["ok"] is False, frame
            assert answer["error"]["code"] == "invalid", (frame, answer)
            assert answer["error"]["field"] == field, (frame, answer)
            assert answer["error"]["message"]
        c.send(b'{"op": "record", "id": 4, "usage": {"component": "c", "model": "m", "cost_usd": 1e999}}\n')
        overflow = c.recv()
        assert overflow["id"] == 4 and overflow["error"]["field"] == "$.usage.cost_usd"
        assert c.call({"op": "ping", "id": 2})["ok"]


def test_client_leaving_mid_frame_does_not_disturb_others(shared_daemon):
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(shared_daemon.socket))
        s.sendall(b'{"op": "record", "id": 1, "usage": {"component": "half", "mod')
        s.close()
    with RawConn(shared_daemon.socket) as c:
        assert c.call({"op": "ping", "id": 1})["ok"]
        listed = c.call({"op": "usage.list", "id": 2, "filters": {"component": "half"}})
        assert listed["result"]["records"] == []


def test_a_thousand_idle_connections(shared_daemon):
    idle = []
    try:
        for _ in range(1000):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(str(shared_daemon.socket))
            idle.append(s)
        with RawConn(shared_daemon.socket) as c:
            assert c.call({"op": "ping", "id": 1})["ok"]
            assert c.call({"op": "status", "id": 2})["ok"]
    finally:
        for s in idle:
            s.close()
    with RawConn(shared_daemon.socket) as c:
        assert c.call({"op": "ping", "id": 3})["ok"]


def test_the_protocol_document_lists_every_op_as_declared():
    """docs/PROTOCOL.md's op table is the declarations': the same ops, results, roles and ways of serving."""
    from pathlib import Path

    from budgetd.protocol import OPS

    table = {}
    for line in (Path(__file__).parent.parent / "docs" / "PROTOCOL.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 6 and cells[0].startswith("`") and cells[2].startswith("`"):
            table[cells[0].strip("`")] = (cells[2].strip("`"), cells[3], cells[4])
    assert table == {name: (t.result.__name__, t.role, t.serve) for name, t in OPS.items()}


def _subscriptions(daemon) -> int:
    with RawConn(daemon.socket) as c:
        return c.call({"op": "status", "id": 0})["result"]["daemon"]["subscriptions"]


def test_subscriptions_cut_off_early_leave_no_feed_behind_and_are_answered(shared_daemon):
    """A subscribe followed at once by EOF (as `printf ... | nc -U` sends it) is answered and its feed closed;
    one cut off by a reset leaves nothing behind either."""
    before = _subscriptions(shared_daemon)
    for n in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(str(shared_daemon.socket))
        s.sendall(b'{"op":"subscribe","id":"sub","topics":["usage"]}\n{"op":"ping","id":2}\n')
        if n % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with a reset
            s.close()
            continue
        s.shutdown(socket.SHUT_WR)
        s.settimeout(10)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
        s.close()
        ids = {json.loads(line)["id"] for line in got.splitlines()}
        assert ids == {"sub", 2}, got
    deadline = time.monotonic() + 10
    while _subscriptions(shared_daemon) != before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _subscriptions(shared_daemon) == before


def test_a_client_that_never_reads_gets_only_so_much_in_flight(shared_daemon):
    """Thousands of large-answer requests in one write, never read: the connection stops taking requests
    (memory stays bounded by what is in flight), others are served, and it is all answered once read."""
    frames = b"".join(b'{"op":"status","id":%d}\n' % i for i in range(3000))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(str(shared_daemon.socket))
    try:
        s.sendall(frames)
        time.sleep(1.0)
        with RawConn(shared_daemon.socket) as other:
            assert other.call({"op": "ping", "id": 1})["ok"]
        s.settimeout(30)
        got, seen = b"", 0
        while seen < 3000:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {seen} answers"
            got += chunk
            seen = got.count(b"\n")
        assert all(json.loads(line)["ok"] for line in got.splitlines())
    finally:
        s.close()


def test_subscriptions_per_connection_are_bounded(shared_daemon):
    with RawConn(shared_daemon.socket) as c:
        c.send(b"".join(b'{"op":"subscribe","id":%d,"topics":["usage"]}\n' % i for i in range(20)))
        answers = [c.recv() for _ in range(20)]
        refused = [a for a in answers if not a["ok"]]
        assert len(refused) == 4 and all(a["error"]["code"] == "busy" for a in refused)
        assert "subscriptions" in refused[0]["error"]["message"]


def test_what_a_client_sent_before_it_half_closed_is_all_answered_however_much(shared_daemon):
    """Thousands of requests and then EOF, read only later: every one is answered (also those held back
    while the connection was full), then the connection closes."""
    frames = b"".join(b'{"op":"status","id":%d}\n{"op":"ping","id":"p%d"}\n' % (i, i) for i in range(1500))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(str(shared_daemon.socket))
    try:
        s.sendall(frames)
        s.shutdown(socket.SHUT_WR)
        time.sleep(0.5)
        s.settimeout(30)
        got = b""
        while chunk := s.recv(1 << 20):
            got += chunk
        ids = [json.loads(line)["id"] for line in got.splitlines()]
        assert len(ids) == 3000 and len(set(ids)) == 3000
    finally:
        s.close()
