"""SQLAlchemy models of pbx-bridge; importing this package registers every table on Base."""

from models.base import Base, UTCDateTime, utcnow
from models.calls import Attribution, Call, HangupSide, Outcome, Recording, RecordingState
from models.delivery import CallEvent, Delivery, DeliveryState, Receiver, Webhook
from models.company import Company, Destination, Site, Source, SourceKind, SourceSpend
from models.numbers import (
    ExhaustedPolicy,
    NumberLease,
    NumberMode,
    NumberPool,
    NumberState,
    PoolExhaustion,
    TrackingNumber,
)
from models.sessions import VisitorSession
from models.users import AccessToken, Role, TokenKind, User

__all__ = [
    "CallEvent",
    "Delivery",
    "DeliveryState",
    "Receiver",
    "Webhook",
    "AccessToken",
    "Role",
    "TokenKind",
    "User",
    "Attribution",
    "Base",
    "Call",
    "Company",
    "Destination",
    "ExhaustedPolicy",
    "HangupSide",
    "NumberLease",
    "NumberMode",
    "NumberPool",
    "NumberState",
    "Outcome",
    "PoolExhaustion",
    "Recording",
    "RecordingState",
    "Site",
    "Source",
    "SourceKind",
    "SourceSpend",
    "TrackingNumber",
    "UTCDateTime",
    "utcnow",
]
