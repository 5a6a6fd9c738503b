"""The activity timeline: both audit trails as events, their filters, and the charts drawn of them.

Hand-made entries go in; the events, and the shapes the SVG template places, come out.
The last test reads a real audit trail that a crash left a torn line in.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from piper_mcp.local.dashboard import activity, chart
from piper_mcp.local.dashboard.activity import Event, Filters
from piper_mcp.local.vault import AuditEntry
from piper_mcp.piper import protocol_names
from piper_mcp.server.audit import AuditTrail
from tests.dashboard import AGENT, CLIENT, OTHER_VARIABLE, VARIABLE
from tests.dashboard.conftest import Browser

NOW = 1_700_000_000.0
HOUR = 3600.0
DAY_START = NOW - 24 * HOUR


def event(at: float, *, agent: str = AGENT, variable: str = VARIABLE, outcome: str = "ok") -> Event:
    return Event(
        at=at,
        source="MCP server",
        agent=agent,
        variable=variable,
        what="STS token",
        client=CLIENT,
        consent="not asked",
        outcome=outcome,
        detail="",
    )


# --- the MCP server's trail ---


def test_a_server_entry_says_who_asked_for_what_and_what_the_model_got() -> None:
    [made] = activity.from_server(
        [
            {
                "time": "2024-05-01T10:00:00.000+00:00",
                "client": CLIENT,
                "agent": AGENT,
                "transport": "stdio",
                "variable": VARIABLE,
                "mode": "token",
                "consent_asked": True,
                "consent_given": True,
                "outcome": "ok",
                "reason": "",
            }
        ]
    )
    assert made == Event(
        at=datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp(),
        source="MCP server",
        agent=AGENT,
        variable=VARIABLE,
        what="STS token",
        client=CLIENT,
        consent="asked, given",
        outcome="ok",
        detail="",
    )


@pytest.mark.parametrize(
    ("fields", "what"),
    [
        ({"mode": "token"}, "STS token"),
        ({"mode": "value"}, "raw value"),
        ({"mode": "call"}, "brokered call"),
        (
            {"mode": "value", "transport": "exec", "command": "python app.py"},
            "exec: raw value into python app.py",
        ),
        ({"mode": "token", "transport": "exec"}, "STS token"),
        ({"mode": "sideways"}, "sideways"),
        ({}, ""),
    ],
)
def test_what_the_model_got_is_named_for_people(fields: dict[str, str], what: str) -> None:
    [made] = activity.from_server([{"time": "2024-05-01T10:00:00+00:00", **fields}])
    assert made.what == what


@pytest.mark.parametrize(
    ("fields", "consent"),
    [
        ({"consent_asked": True, "consent_given": True}, "asked, given"),
        ({"consent_asked": True, "consent_given": False}, "asked, refused"),
        ({"consent_asked": False}, "not asked"),
        ({}, "not asked"),
    ],
)
def test_whether_consent_was_asked_and_given(fields: dict[str, bool], consent: str) -> None:
    [made] = activity.from_server([{"time": "2024-05-01T10:00:00+00:00", **fields}])
    assert made.consent == consent


def test_a_brokered_calls_detail_names_the_request_and_its_answer() -> None:
    [made] = activity.from_server(
        [
            {
                "time": "2024-05-01T10:00:00+00:00",
                "mode": "call",
                "method": "POST",
                "host": "api.openai.com",
                "status": 200,
                "reason": "the rule allows it",
                "outcome": "ok",
            }
        ]
    )
    assert made.detail == "the rule allows it; POST api.openai.com → 200"


def test_missing_fields_are_empty_and_an_entry_without_an_outcome_is_unknown() -> None:
    [made] = activity.from_server([{"time": "2024-05-01T10:00:00+00:00", "agent": None}])
    assert (made.agent, made.variable, made.client, made.detail) == ("", "", "", "")
    assert made.outcome == "unknown"
    assert made.tone == "failed"


def test_long_fields_are_cut() -> None:
    [made] = activity.from_server([{"time": "2024-05-01T10:00:00+00:00", "client": "x" * 5000}])
    assert made.client == "x" * 200


def test_entries_that_cannot_be_placed_in_time_are_left_out() -> None:
    entries: list[dict[str, object]] = [
        {"agent": AGENT},
        {"time": "yesterday"},
        {"time": 12},
        {"time": "2024-05-01T10:00:00+00:00", "agent": AGENT},
    ]
    assert [made.agent for made in activity.from_server(entries)] == [AGENT]


# --- the vault's trail ---


def row(
    action: str, subject: str | None, outcome: str = "ok", reason: str | None = None
) -> AuditEntry:
    return AuditEntry(NOW, AGENT, "user-1", action, subject, outcome, reason)


@pytest.mark.parametrize(
    ("entry", "variable", "what", "detail"),
    [
        (row(protocol_names.RESOLVE_MAPPING_FUNCTION, VARIABLE), VARIABLE, "variable resolved", ""),
        (
            row("dashboard", f"{VARIABLE} Ada's key", "granted"),
            VARIABLE,
            "grant changed in the dashboard",
            "Ada's key",
        ),
        (
            row("grant_page", f"{VARIABLE} Ada's key", "granted"),
            VARIABLE,
            "decided on the grant page",
            "Ada's key",
        ),
        (
            row("command_line", OTHER_VARIABLE, "denied"),
            OTHER_VARIABLE,
            "grant changed on the command line",
            "",
        ),
        (
            row(protocol_names.GET_SCOPED_FUNCTION, "cred-1234", "refused", "no grant"),
            "",
            "STS token minted",
            "cred-1234 no grant",
        ),
        (
            row("dashboard_secret", "Stripe key", "stored"),
            "",
            "secret changed in the dashboard",
            "Stripe key",
        ),
        (row("something new", None), "", "something new", ""),
    ],
    ids=["resolved", "dashboard", "grant page", "command line", "minted", "secret", "unknown"],
)
def test_a_vault_row_names_its_variable_only_where_its_subject_starts_with_one(
    entry: AuditEntry, variable: str, what: str, detail: str
) -> None:
    [made] = activity.from_vault([entry])
    assert (made.source, made.agent, made.at) == ("backend", AGENT, NOW)
    assert (made.variable, made.what, made.detail) == (variable, what, detail)
    assert (made.client, made.consent) == ("", "")


def test_a_vault_row_without_an_agent_has_none() -> None:
    [made] = activity.from_vault([AuditEntry(NOW, None, None, "audit", None, "dropped", "3")])
    assert made.agent == ""


# --- tones ---


@pytest.mark.parametrize(
    ("outcome", "tone"),
    [
        ("ok", "ok"),
        ("granted", "ok"),
        ("refused", "refused"),
        ("denied", "refused"),
        ("no_grant", "refused"),
        ("http_404", "refused"),
        ("storage_unavailable", "failed"),
        ("error", "failed"),
        ("unknown", "failed"),
        ("http_502", "failed"),
    ],
)
def test_an_outcomes_tone_says_whether_it_worked_a_policy_said_no_or_something_broke(
    outcome: str, tone: str
) -> None:
    assert event(NOW, outcome=outcome).tone == tone


@pytest.mark.parametrize(
    ("action", "subject", "outcome"),
    [
        ("dashboard_secret", "Stripe key", "stored"),
        ("dashboard_secret", "Stripe key", "replaced"),
        ("dashboard_secret", "Stripe key", "removed"),
        ("dashboard", VARIABLE, "revoked"),
    ],
)
def test_the_users_own_changes_are_not_shown_as_refusals(
    action: str, subject: str, outcome: str
) -> None:
    """A secret stored or a grant revoked in the dashboard worked; no policy said no."""
    [made] = activity.from_vault([row(action, subject, outcome)])
    assert made.tone != "refused"
    assert not Filters(outcome="refused").keeps(made, 0.0)


# --- filters ---


def test_filters_from_a_query_keep_what_they_know() -> None:
    assert Filters.from_query({}) == Filters(agent="", variable="", outcome="", window="day")
    assert Filters.from_query(
        {"agent": AGENT, "variable": VARIABLE, "outcome": "failed", "window": "week"}
    ) == Filters(agent=AGENT, variable=VARIABLE, outcome="failed", window="week")


def test_filters_fall_back_on_values_they_do_not_know() -> None:
    filters = Filters.from_query(
        {"outcome": "granted", "window": "year", "agent": "a" * 1000, "variable": "v" * 1000}
    )
    assert filters == Filters(agent="a" * 200, variable="v" * 200, outcome="", window="day")


def test_the_timeline_merges_both_trails_oldest_first_within_the_window() -> None:
    server = [event(NOW - 10), event(NOW - 25 * HOUR), event(DAY_START)]
    backend = [event(NOW - 20), event(NOW + 5)]
    kept, since = activity.timeline(server, backend, Filters(), now=NOW)
    assert since == DAY_START
    assert [e.at for e in kept] == [DAY_START, NOW - 20, NOW - 10, NOW + 5]


@pytest.mark.parametrize(
    ("filters", "kept"),
    [
        (Filters(agent="agent-writer"), [2]),
        (Filters(variable=OTHER_VARIABLE), [1, 3]),
        (Filters(outcome="ok"), [0, 2]),
        (Filters(outcome="refused"), [1]),
        (Filters(outcome="failed"), [3]),
        (Filters(agent=AGENT, outcome="failed"), [3]),
        (Filters(window="hour"), [0, 1, 2]),
        (Filters(window="week"), [0, 1, 2, 3, 4]),
    ],
)
def test_the_timeline_keeps_what_its_filters_ask_for(filters: Filters, kept: list[int]) -> None:
    events = [
        event(NOW - 50 * 60),
        event(NOW - 40 * 60, variable=OTHER_VARIABLE, outcome="denied"),
        event(NOW - 30 * 60, agent="agent-writer"),
        event(NOW - 2 * HOUR, variable=OTHER_VARIABLE, outcome="error"),
        event(NOW - 3 * 24 * HOUR),
    ]
    shown, _ = activity.timeline(events, [], filters, now=NOW)
    assert shown == [events[index] for index in sorted(kept, key=lambda i: events[i].at)]


# --- the charts ---


def clock(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at))


def bars_of(drawn: chart.Charts) -> list[tuple[int, str, int]]:
    """(interval, tone, count) of each bar, read back from where it is drawn and its title."""
    interval = chart.WIDTH / chart.BUCKETS
    return [
        (round((bar.x - 1) / interval), bar.tone, int(bar.title.split(" ", 1)[0]))
        for bar in drawn.bars
    ]


def test_nothing_to_draw_draws_nothing() -> None:
    drawn = chart.charts([], DAY_START, now=NOW)
    assert (drawn.bars, drawn.most, drawn.lanes, drawn.lanes_left_out) == ([], 0, [], 0)
    assert drawn.lanes_height == 0


def test_calls_are_counted_per_interval_and_stacked_by_tone() -> None:
    events = [
        event(DAY_START + 0.5 * HOUR, outcome="error"),
        event(DAY_START + 1.2 * HOUR),
        event(DAY_START + 1.8 * HOUR),
        event(DAY_START + 1.9 * HOUR, outcome="denied"),
        event(NOW),  # the end of the window falls in the last interval
    ]
    drawn = chart.charts(events, DAY_START, now=NOW)
    assert drawn.most == 3
    assert bars_of(drawn) == [(0, "failed", 1), (1, "ok", 2), (1, "refused", 1), (23, "ok", 1)]
    full = chart.BAR_HEIGHT - 10
    failed, ok, refused, last = drawn.bars
    assert failed.height == pytest.approx(full / 3)
    assert ok.height == pytest.approx(full * 2 / 3)
    assert ok.y == pytest.approx(chart.BAR_HEIGHT - ok.height)
    assert refused.y + refused.height == pytest.approx(ok.y)  # stacked on the ok part
    assert last.x + last.width == pytest.approx(chart.WIDTH - 1)
    assert (
        failed.title
        == f"1 failed from {time.strftime('%Y-%m-%d %H:%M', time.localtime(DAY_START))}"
    )


def test_the_charts_are_labelled_with_the_windows_start_and_end() -> None:
    drawn = chart.charts([], DAY_START, now=NOW)
    assert (drawn.start, drawn.end) == (clock(DAY_START), clock(NOW))


def test_each_agent_and_variable_gets_a_lane_with_a_mark_per_busy_interval() -> None:
    interval = 24 * HOUR / chart.LANE_BUCKETS
    events = [
        event(DAY_START),
        event(NOW - 12 * HOUR, outcome="denied"),
        event(NOW - 12 * HOUR + interval / 2, outcome="error"),  # the same interval
        event(NOW, agent="", variable=OTHER_VARIABLE),
        event(NOW, variable=""),  # names no variable: no lane
    ]
    drawn = chart.charts(events, DAY_START, now=NOW)
    assert [(lane.label, lane.y) for lane in drawn.lanes] == [
        (f"? · {OTHER_VARIABLE}", 0),
        (f"{AGENT} · {VARIABLE}", chart.LANE_HEIGHT),
    ]
    assert drawn.lanes_height == 2 * chart.LANE_HEIGHT
    step = (chart.WIDTH - chart.LABEL_WIDTH) / chart.LANE_BUCKETS
    [last] = drawn.lanes[0].marks
    assert last.x == pytest.approx(chart.LABEL_WIDTH + (chart.LANE_BUCKETS - 1) * step)
    first, middle = drawn.lanes[1].marks
    assert [first.tone, middle.tone] == ["ok", "failed"]  # an interval shows its worst
    assert [first.x, middle.x] == pytest.approx(
        [chart.LABEL_WIDTH, chart.LABEL_WIDTH + chart.LANE_BUCKETS / 2 * step]
    )
    assert middle.width == pytest.approx(step - 1)
    assert middle.y == chart.LANE_HEIGHT + 5
    assert middle.title == f"from {clock(NOW - 12 * HOUR)}: 1 refused, 1 failed"
    assert first.title == f"from {clock(DAY_START)}: 1 ok"


def test_only_the_busiest_lanes_are_drawn_and_the_rest_are_counted() -> None:
    events = [
        event(NOW - lane * 60 - repeat, variable=f"busy_{lane:02}")
        for lane in range(chart.MAX_LANES)
        for repeat in range(2)
    ] + [event(NOW, variable=f"quiet_{lane}") for lane in range(3)]
    drawn = chart.charts(events, DAY_START, now=NOW)
    assert [lane.label for lane in drawn.lanes] == [
        f"{AGENT} · busy_{lane:02}" for lane in range(chart.MAX_LANES)
    ]
    assert drawn.lanes_left_out == 3
    assert drawn.lanes_height == chart.MAX_LANES * chart.LANE_HEIGHT


# --- a real trail ---


def test_a_torn_line_in_the_audit_trail_is_left_out_and_counted_on_the_page(
    browser: Browser, audit_path: Path
) -> None:
    AuditTrail(audit_path).record(
        client=CLIENT, agent=AGENT, variable=VARIABLE, mode="token", outcome="ok", reason=""
    )
    with audit_path.open("ab") as trail:  # a server killed halfway through a line
        trail.write(b'{"time": "2024-05-01T10:00:00.000+00:00", "client": "Cla')
    AuditTrail(audit_path).record(  # the next server starts its entry on a line of its own
        client=CLIENT, agent=AGENT, variable=OTHER_VARIABLE, mode="value", outcome="refused"
    )
    page = browser.get("/activity").text
    assert "1 unreadable line of the MCP server's audit trail left out." in page
    body = page.split('<table id="events">', 1)[1].split("</tbody>", 1)[0]
    assert re.findall(r"<td><code>([^<]*)</code></td>", body) == [OTHER_VARIABLE, VARIABLE]


def test_control_and_bidi_characters_of_a_trail_are_shown_escaped() -> None:
    """A model's variable argument is recorded as sent; the page must not let it reorder
    or hide text around it (U+202E), as `piper-mcp audit` does not either."""
    [event] = activity.from_server(
        [{"time": "2026-11-29T00:00:00+00:00", "variable": "github_token\u202e", "outcome": "ok"}]
    )
    assert event.variable == "github_token\\u202e"
