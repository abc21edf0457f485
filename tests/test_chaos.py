"""The short run of every chaos and soak case (`make soak` runs them for minutes)."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import RawConn
from tests.soak import abandoned_connections, hanging_neighbours, mixed_workload


def test_mixed_load_with_kills_loses_nothing_and_holds_the_limit(tmp_path):
    result = mixed_workload(tmp_path, seconds=8, workers=4, kills=2)
    assert result["violations"] == [], result
    # How much load a loaded machine manages does not matter here: what was acknowledged must all be there.
    assert result["kills"] == 2 and result["records verified"] > 0 and result["samples"] > 0, result


def test_abandoned_connections_leave_memory_bounded(tmp_path):
    result = abandoned_connections(tmp_path, 1_500)
    assert result["violations"] == [], result


def test_hanging_neighbours_do_not_slow_recording(tmp_path):
    result = hanging_neighbours(tmp_path, 200)
    assert result["violations"] == [], result


FRAMES = st.one_of(
    st.binary(max_size=300).map(lambda b: b.replace(b"\n", b" ")),
    st.dictionaries(st.sampled_from(["op", "id", "usage", "estimate", "topics", "group_by", "x"]),
                    st.one_of(st.none(), st.integers(), st.text(max_size=20), st.lists(st.integers(), max_size=3),
                              st.dictionaries(st.text(max_size=8), st.integers(), max_size=3)),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(frame=FRAMES)
def test_random_frames_get_valid_envelopes(shared_daemon, frame):
    with RawConn(shared_daemon.socket) as conn:
        conn.send(frame + b"\n")
        if frame.strip():  # blank lines are skipped without an answer
            answer = conn.recv()
            assert set(answer) >= {"id", "ok"}
            assert answer["ok"] or (answer["error"]["code"] and answer["error"]["message"])
        assert conn.call({"op": "ping", "id": "alive"})["ok"]
