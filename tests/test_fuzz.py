"""No input crashes the parsers: hypothesis feeds them bytes and near-envelopes.

Both parsers (the receiver's model and the worker's fast path) must answer
every input with a result or InvalidBody, and agree on which inputs are valid.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from engagement.events import InvalidBody, decode_event, parse_body

FUZZ = settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# Anything JSON can hold, small.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=12),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=12,
)
ids = st.one_of(st.text(max_size=6), st.integers(), st.none(), json_values)
instants = st.one_of(
    st.datetimes().map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat() + "Z"),
    st.sampled_from(["2026-11-20T14:30:05.250Z", "9999-12-31T23:59:59-05:00", ""]),
    json_values,
)
names = st.sampled_from(
    [
        "ping",
        "alpaclass.student_created",
        "alpaclass.student_lesson_finished",
        "alpaclass.student_module_finished",
        "alpaclass.student_access_course",
        "alpaclass.student_new_thing",
        "nutror.x",
        " ",
    ]
) | st.text(max_size=10)
refs = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {"id": ids},
        optional={"name": json_values, "email": json_values, "createdAt": instants},
    ),
    json_values,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "id": ids,
        "event": names,
        "sentDate": instants,
        "data": st.fixed_dictionaries(
            {},
            optional={
                field: refs
                for field in ("student", "team", "course", "module", "lesson")
            },
        )
        | json_values,
    },
)


def _outcome(parse, raw: bytes) -> bool:
    """True if ``parse`` accepted ``raw``; any exception but InvalidBody fails."""
    try:
        parse(raw)
    except InvalidBody as error:
        assert error.reason  # a refusal always says why
        return False
    return True


@FUZZ
@given(st.binary(max_size=300))
def test_no_bytes_crash_either_parser(raw):
    assert _outcome(parse_body, raw) == _outcome(decode_event, raw)


@FUZZ
@given(envelopes)
def test_near_envelopes_never_crash_and_both_parsers_agree(document):
    raw = json.dumps(document).encode()
    assert _outcome(parse_body, raw) == _outcome(decode_event, raw)
