"""Cron schedules as cronie (Vixie cron) reads them, and when they fire. Plain logic, no I/O.

:func:`parse` is stricter than cron where cron is lenient and names the field of every error:
five fields or one macro, numbers in range, ranges that run forwards, steps of 1 to the
field's largest value that apply to a range or ``*`` (cronie refuses ``5/10``), month and day
names only in their own fields, and no schedule that can never fire (``0 0 30 2 *``). A
schedule must also satisfy croniter, as a second opinion.

Which days match follows cron's rule: when the day-of-month or the day-of-week field starts
with ``*`` a day must match both, otherwise either (``0 0 13 * 5`` fires on every 13th *and*
every Friday). croniter decides that differently for ``*/2``-style fields and gets daylight
saving wrong (it fires a 02:30 job at 03:30 on the spring-forward day, 02:30 on the day after
a fall-back at 03:30), so :func:`next_fire_times` is our own.

Daylight saving, as cronie's main loop (``cron.c``) runs jobs in the server's local time:

- a **fixed-time** entry (neither minute nor hour starts with ``*``: ``30 2 * * *``) whose
  wall time falls in a gap (clocks go forward) runs once at the end of the gap, the first
  instant that exists (03:00 new time); in a repeated hour (clocks go back) it runs only at
  the first occurrence;
- a **wildcard** entry (minute or hour starts with ``*``: ``*/15 * * * *``, ``@hourly``) runs
  at every wall-clock minute that occurs: not at all in a gap, twice in a repeated hour;
- a change of three hours or more is a clock jump, not daylight saving: times in a gap are
  skipped and repeated times run again, for every entry.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from schemas.cron import schedule_problem


class CronSyntaxError(ValueError):
    """A schedule cron would refuse, or that can never fire; the message names the field."""


@dataclass(frozen=True)
class FieldSpec:
    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # index + low = value

    def value(self, text: str) -> int:
        if text.isdigit():
            number = int(text) if len(text) <= 4 else self.high + 1
        elif text.lower() in self.names:
            number = self.names.index(text.lower()) + self.low
        else:
            kinds = f"a number or a name ({self.names[0]}-{self.names[-1]})" if self.names \
                else "a number"
            raise CronSyntaxError(f"{self.name}: {text!r} is not {kinds}")
        if not self.low <= number <= self.high:
            raise CronSyntaxError(f"{self.name}: {text} is out of range "
                                  f"{self.low}-{self.high}")
        return number


MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
               "dec")
DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
FIELDS = (FieldSpec("minute", 0, 59), FieldSpec("hour", 0, 23),
          FieldSpec("day-of-month", 1, 31), FieldSpec("month", 1, 12, MONTH_NAMES),
          FieldSpec("day-of-week", 0, 7, DAY_NAMES))
MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
          "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
          "@hourly": "0 * * * *"}
REBOOT = "@reboot"
#: the most days each month can have (February in a leap year)
MONTH_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
#: a clock change this large is a jump, not daylight saving (cronie: three hours)
CLOCK_JUMP = timedelta(hours=3)
LAST_YEAR = 9998


@dataclass(frozen=True)
class CronExpr:
    """A parsed schedule: the values each field allows and cron's flags."""

    text: str  # as written (macros kept), whitespace normalised
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday (7 folded in)
    dom_star: bool
    dow_star: bool
    wildcard: bool  # minute or hour starts with '*': not caught up across DST gaps
    reboot: bool = False

    def matches_day(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom = day.day in self.days
        dow = day.isoweekday() % 7 in self.weekdays
        return (dom and dow) if self.dom_star or self.dow_star else (dom or dow)


def parse(text: str) -> CronExpr:
    """The schedule ``text``, or :class:`CronSyntaxError` saying what is wrong and where."""
    problem = schedule_problem(text)
    if problem:
        raise CronSyntaxError(problem)
    words = text.split()
    if words[0].startswith("@"):
        return _macro(words)
    if len(words) != len(FIELDS):
        raise CronSyntaxError(_count_message(len(words)))
    expr = _fields(" ".join(words), words)
    _check_fires(expr)
    _second_opinion(" ".join(words))
    return expr


def _count_message(count: int) -> str:
    hint = " (seconds, years or a command are not part of a schedule)" if count > 5 else ""
    return (f"expected 5 fields (minute hour day-of-month month day-of-week), got "
            f"{count}{hint}")


def _macro(words: list[str]) -> CronExpr:
    macro = words[0]
    if macro not in MACROS and macro != REBOOT:  # named first: "@every 5m" is no macro at all
        raise CronSyntaxError(f"unknown macro {macro} (known: {', '.join([*MACROS, REBOOT])})")
    if len(words) != 1:
        raise CronSyntaxError(f"the macro {macro} stands alone: no fields after it")
    if macro == REBOOT:
        empty: frozenset[int] = frozenset()
        return CronExpr(macro, empty, empty, empty, empty, empty, False, False, False, True)
    expanded = MACROS[macro].split()
    return _fields(macro, expanded)


def _fields(text: str, words: list[str]) -> CronExpr:
    minutes, hours, days, months, weekdays = (
        parse_field(spec, word) for spec, word in zip(FIELDS, words, strict=True))
    weekdays = frozenset(d % 7 for d in weekdays)
    return CronExpr(text, minutes, hours, days, months, weekdays,
                    dom_star=words[2].startswith("*"), dow_star=words[4].startswith("*"),
                    wildcard=words[0].startswith("*") or words[1].startswith("*"))


def parse_field(spec: FieldSpec, text: str) -> frozenset[int]:
    """The values one field allows: a comma list of ``*``, ``N`` or ``A-B``, each range with
    an optional ``/step``."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronSyntaxError(f"{spec.name}: empty item in the list {text!r}")
        values.update(_item(spec, item))
    return frozenset(values)


def _item(spec: FieldSpec, item: str) -> range:
    base, slash, step_text = item.partition("/")
    if base == "*":
        first, last = spec.low, spec.high
    elif "-" in base:
        first, last = _range(spec, base)
    else:
        first = last = spec.value(base)
        if slash:
            raise CronSyntaxError(f"{spec.name}: a step needs a range or '*' ({item!r}: "
                                  f"write {base}-{spec.high}/{step_text})")
    step = _step(spec, item, step_text) if slash else 1
    return range(first, last + 1, step)


def _range(spec: FieldSpec, text: str) -> tuple[int, int]:
    start, _, end = text.partition("-")
    if not start or not end or "-" in end:
        raise CronSyntaxError(f"{spec.name}: {text!r} is not a range (A-B)")
    first, last = spec.value(start), spec.value(end)
    if first > last:
        raise CronSyntaxError(f"{spec.name}: the range {text} runs backwards")
    return first, last


def _step(spec: FieldSpec, item: str, text: str) -> int:
    if not text.isdigit():
        raise CronSyntaxError(f"{spec.name}: step {text!r} in {item!r} is not a number")
    step = int(text) if len(text) <= 4 else spec.high + 1
    if step == 0:
        raise CronSyntaxError(f"{spec.name}: step value of zero in {item!r}")
    if step > spec.high:
        raise CronSyntaxError(f"{spec.name}: step {text} in {item!r} is larger than "
                              f"{spec.high}")
    return step


def _check_fires(expr: CronExpr) -> None:
    """Refuse a schedule whose day-of-month never occurs in its months. With the OR rule the
    weekday alone makes it fire; with the AND rule every month-day pair that exists falls on
    every weekday in some year, so the month-day pairs decide."""
    if not (expr.dom_star or expr.dow_star):
        return
    if any(day <= MONTH_DAYS[month] for month in expr.months for day in expr.days):
        return
    months = [calendar.month_name[m] for m in sorted(expr.months)]
    days = sorted(expr.days)
    verb = "has" if len(months) == 1 else "have"
    raise CronSyntaxError(f"never fires: {_words(months, 'and')} {verb} no day "
                          f"{_words([str(d) for d in days], 'or')}")


def _words(items: list[str], last: str) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} {last} {items[-1]}"


def _second_opinion(text: str) -> None:
    try:
        from croniter import croniter  # on first use: the agent's memory (dateutil, pytz)

        croniter(text)
    except (ValueError, KeyError) as exc:
        raise CronSyntaxError(f"croniter refuses the schedule: {exc}") from None


# -- when it fires ---------------------------------------------------------------------------

def next_fire_times(expr: CronExpr | str, tz: ZoneInfo | str, n: int,
                    start: datetime) -> list[datetime]:
    """The next ``n`` instants after ``start`` (aware) at which cron runs ``expr``, in ``tz``
    (the daemon's local time), with the daylight-saving rules in the module docstring.
    ``@reboot`` has none."""
    if start.tzinfo is None:
        raise ValueError("start must be timezone-aware")
    expr = parse(expr) if isinstance(expr, str) else expr
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    if expr.reboot or n <= 0:
        return []
    after = start.astimezone(UTC)
    found: set[datetime] = set()
    # from the day before: a repeated hour late at night may still lie ahead of start
    first = start.astimezone(zone).date() - timedelta(days=1)
    filled_on: date | None = None
    for day in matching_days(expr, first):
        if filled_on is not None and day > filled_on + timedelta(days=1):
            break  # one more day checked: a DST shift around midnight can reorder instants
        found.update(t for t in day_fire_times(expr, day, zone) if t > after)
        if filled_on is None and len(found) >= n:
            filled_on = day
    return [t.astimezone(zone) for t in sorted(found)[:n]]


def matching_days(expr: CronExpr, first: date) -> Iterator[date]:
    """The days from ``first`` on that ``expr`` fires on, in order (up to year 9998)."""
    for year in range(first.year, LAST_YEAR + 1):
        for month in sorted(expr.months):
            if (year, month) < (first.year, first.month):
                continue
            for day in _month_days(expr, year, month):
                if day >= first:
                    yield day


def _month_days(expr: CronExpr, year: int, month: int) -> Iterator[date]:
    length = calendar.monthrange(year, month)[1]
    # the AND rule only needs the listed days; the OR rule needs every day of the month
    candidates = sorted(expr.days) if expr.dom_star or expr.dow_star else range(1, length + 1)
    for number in candidates:
        if number <= length and expr.matches_day(date(year, month, number)):
            yield date(year, month, number)


def day_fire_times(expr: CronExpr, day: date, zone: ZoneInfo) -> list[datetime]:
    """Every instant (UTC) cron runs ``expr`` for the wall-clock times of ``day``."""
    out: list[datetime] = []
    for hour in sorted(expr.hours):
        for minute in sorted(expr.minutes):
            out.extend(wall_instants(datetime.combine(day, time(hour, minute)), zone,
                                     expr.wildcard))
    return out


def wall_instants(wall: datetime, zone: ZoneInfo, wildcard: bool) -> list[datetime]:
    """The instants (UTC) at which cron runs a job due at the naive local time ``wall``."""
    early, late = wall.replace(tzinfo=zone, fold=0), wall.replace(tzinfo=zone, fold=1)
    before, after = early.utcoffset(), late.utcoffset()
    assert before is not None and after is not None
    if before == after:
        return [early.astimezone(UTC)]
    if before > after:  # clocks went back: this wall time occurs twice
        twice = wildcard or before - after > CLOCK_JUMP
        return [early.astimezone(UTC), late.astimezone(UTC)] if twice \
            else [early.astimezone(UTC)]
    if wildcard or after - before >= CLOCK_JUMP:  # clocks went forward past it
        return []
    return [gap_end(wall, zone, before, after)]


def gap_end(wall: datetime, zone: ZoneInfo, before: timedelta, after: timedelta) -> datetime:
    """The instant (UTC) clocks jumped forward over ``wall``: the first one after the gap."""
    low = (wall - after).replace(tzinfo=UTC)  # still on the old offset
    high = (wall - before).replace(tzinfo=UTC)  # already on the new one
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        middle = middle.replace(microsecond=0)
        if middle.astimezone(zone).utcoffset() == after:
            high = middle
        else:
            low = middle
    return high
