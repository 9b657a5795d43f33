"""The authenticated user of a request, shared by the API handlers and the dashboard."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from models import Role
from pbx_bridge.admin.errors import forbidden


@dataclass(frozen=True)
class Principal:
    """The authenticated user of one request."""

    user_id: int
    login: str
    name: str
    role: str
    company_id: int | None
    language: str
    token_id: int
    token_kind: str

    @property
    def is_admin(self) -> bool:
        return self.role == Role.ADMIN.value

    def company_filter(self, requested: int | None) -> int | None:
        """The company a query may cover: the viewer's own, or for an admin the one requested
        (None meaning all). A viewer naming another company gets 403."""
        if self.is_admin:
            return requested
        if requested is not None and requested != self.company_id:
            raise forbidden()
        return self.company_id

    def can_see(self, company_id: int | None) -> bool:
        return self.is_admin or (company_id is not None and company_id == self.company_id)


USER = web.RequestKey("user", Principal)
