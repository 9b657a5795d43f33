"""Scripted behaviour of the far end of an endpoint (a company line) when the fake dials it.

`FakeAsterisk.script_endpoint("PJSIP/office", Answer(after=0.05))` tells the fake what the line
does once a channel to that endpoint is dialed with `POST /channels/{channelId}/dial`. Times are
seconds counted from the dial request.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Answer:
    """The line rings, answers after `after` seconds and, unless `hangup_after` is None, hangs up
    that many seconds after answering with `hangup_cause`.

    With `early_media` the line sends early media (SIP 183 Session Progress) in place of ringing,
    as provider trunks and mobile networks often do.
    """

    after: float = 0.05
    hangup_after: float | None = None
    hangup_cause: int = 16
    early_media: bool = False


@dataclass(frozen=True)
class Busy:
    """The line answers busy after `after` seconds without ringing first: Dial BUSY, then the leg
    is hung up with cause 17. `tech_cause` is the SIP status a PJSIP channel reports (486)."""

    after: float = 0.02
    tech_cause: int | None = None


@dataclass(frozen=True)
class NoAnswer:
    """The line rings until the dial timeout, the application or the caller ends the attempt.

    With `early_media` it sends early media (SIP 183 Session Progress) in place of ringing.
    """

    early_media: bool = False


@dataclass(frozen=True)
class Fail:
    """The line fails after `after` seconds without ringing and the leg is hung up with `cause`.

    Cause 34 (circuit congestion) first reports Dial CONGESTION, as Asterisk does for a congestion
    indication; other causes hang up with no Dial status, because Asterisk's ARI dial reports only
    BUSY and CONGESTION of the failures.
    """

    cause: int = 34
    after: float = 0.02
    tech_cause: int | None = None


LineBehaviour = Answer | Busy | NoAnswer | Fail
