"""Report queries over the call journal for a period in a company's time zone."""

from pbx_bridge.reports.queries import (
    DayRow,
    DestinationRow,
    HourRow,
    Period,
    PoolRow,
    SourceRow,
    calls_by_day,
    calls_by_hour,
    destination_report,
    pool_report,
    source_report,
)

__all__ = [
    "DayRow",
    "DestinationRow",
    "HourRow",
    "Period",
    "PoolRow",
    "SourceRow",
    "calls_by_day",
    "calls_by_hour",
    "destination_report",
    "pool_report",
    "source_report",
]
