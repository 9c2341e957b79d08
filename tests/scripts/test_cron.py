"""Pure tests of the cron matcher."""

from __future__ import annotations

import datetime as dt

import pytest

from coder_agent.scripts.cron import CronError, parse_cron

T0 = dt.datetime(2026, 1, 1, 12, 0, 30)  # a Thursday


def test_every_minute_five_fields() -> None:
    c = parse_cron("* * * * *")
    assert c.next_after(T0) == dt.datetime(2026, 1, 1, 12, 1, 0)


def test_six_fields_have_seconds_first() -> None:
    c = parse_cron("*/10 * * * * *")
    assert c.next_after(T0) == dt.datetime(2026, 1, 1, 12, 0, 40)


def test_steps_ranges_lists_names() -> None:
    c = parse_cron("15,45 9-17/4 * jan-mar mon-fri")
    assert c.next_after(T0) == dt.datetime(2026, 1, 1, 13, 15)
    assert parse_cron("0 0 * * sun").next_after(T0) == dt.datetime(2026, 1, 4, 0, 0)
    assert parse_cron("0 0 * * 7").next_after(T0) == dt.datetime(2026, 1, 4, 0, 0)
    assert parse_cron("30 2 29 2 *").next_after(T0) == dt.datetime(2028, 2, 29, 2, 30)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    c = parse_cron("0 0 10 * mon")  # the 10th OR a Monday
    assert c.next_after(T0) == dt.datetime(2026, 1, 5, 0, 0)  # Monday the 5th
    assert c.matches(dt.datetime(2026, 1, 10, 0, 0))


def test_descriptors_and_every() -> None:
    assert parse_cron("@hourly").next_after(T0) == dt.datetime(2026, 1, 1, 13, 0)
    assert parse_cron("@daily").next_after(T0) == dt.datetime(2026, 1, 2, 0, 0)
    assert parse_cron("@every 1m30s").next_after(T0) == T0 + dt.timedelta(seconds=90)


def test_next_after_is_strictly_later_and_matches() -> None:
    c = parse_cron("*/7 * * * *")
    t = T0
    for _ in range(50):
        n = c.next_after(t)
        assert n > t and c.matches(n)
        t = n


@pytest.mark.parametrize("bad", ["", "* * * *", "61 * * * *", "* * * * * * *", "*/0 * * * *", "a b c d e",
                                 "@sometimes", "@every soon", "5-1 * * * *"])
def test_bad_expressions(bad: str) -> None:
    with pytest.raises(CronError):
        parse_cron(bad)
