"""Schedules read as Go's robfig parser with seconds reads them (five fields start with seconds)."""

from __future__ import annotations

import datetime as dt

import pytest

from coder_agent.scripts.cron import CronError, parse_cron

T0 = dt.datetime(2026, 1, 1, 12, 0, 30)  # a Thursday


def test_five_fields_start_with_seconds_as_in_the_go_agent() -> None:
    assert parse_cron("*/5 * * * *").next_after(T0) == dt.datetime(2026, 1, 1, 12, 0, 35)
    assert parse_cron("* * * * *").next_after(T0) == dt.datetime(2026, 1, 1, 12, 0, 31)
    assert parse_cron("0 */15 * * *").next_after(T0) == dt.datetime(2026, 1, 1, 12, 15, 0)
    assert parse_cron("0 0 0 1 *").next_after(T0) == dt.datetime(2026, 2, 1, 0, 0, 0)  # the 1st, at midnight


def test_six_fields_add_day_of_week() -> None:
    assert parse_cron("*/10 * * * * *").next_after(T0) == dt.datetime(2026, 1, 1, 12, 0, 40)
    assert parse_cron("0 0 0 * * sun").next_after(T0) == dt.datetime(2026, 1, 4, 0, 0)
    assert parse_cron("0 0 0 * * 0").next_after(T0) == dt.datetime(2026, 1, 4, 0, 0)
    assert parse_cron("0 15,45 9-17/4 * jan-mar mon-fri").next_after(T0) == dt.datetime(2026, 1, 1, 13, 15)
    assert parse_cron("0 30 2 29 2 *").next_after(T0) == dt.datetime(2028, 2, 29, 2, 30)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    c = parse_cron("0 0 0 10 * mon")  # the 10th OR a Monday
    assert c.next_after(T0) == dt.datetime(2026, 1, 5, 0, 0)  # Monday the 5th
    assert c.next_after(dt.datetime(2026, 1, 9, 1)) == dt.datetime(2026, 1, 10, 0, 0)


def test_question_mark_and_descriptors_and_every() -> None:
    assert parse_cron("0 0 12 ? * ?").next_after(T0) == dt.datetime(2026, 1, 2, 12, 0)
    assert parse_cron("@hourly").next_after(T0) == dt.datetime(2026, 1, 1, 13, 0)
    assert parse_cron("@daily").next_after(T0) == dt.datetime(2026, 1, 2, 0, 0)
    assert parse_cron("@every 1m30s").next_after(T0) == T0 + dt.timedelta(seconds=90)
    assert parse_cron("@every 500ms").next_after(T0) == T0 + dt.timedelta(seconds=0.5)


def test_next_after_is_strictly_later_and_timezone_aware() -> None:
    c = parse_cron("*/7 * * * *")
    t = dt.datetime(2026, 3, 29, 0, 59, 50, tzinfo=dt.UTC)
    for _ in range(50):
        n = c.next_after(t)
        assert n > t and n.second % 7 == 0 and n.tzinfo is not None
        t = n


@pytest.mark.parametrize("bad", ["", "* * * *", "61 * * * *", "* * * * * * *", "*/0 * * * *", "a b c d e",
                                 "@sometimes", "@every soon", "0 0 25 * *"])
def test_bad_expressions(bad: str) -> None:
    with pytest.raises(CronError):
        parse_cron(bad)
