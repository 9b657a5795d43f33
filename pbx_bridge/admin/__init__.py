"""The admin API under /api/v1/: users and tokens, settings, the call journal, reports, recordings."""

from pbx_bridge.admin.routes import setup_admin

__all__ = ["setup_admin"]
