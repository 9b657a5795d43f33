"""Server-rendered dashboard in Russian and English: journal, source report, pools."""

from pbx_bridge.dashboard.pages import setup_dashboard

__all__ = ["setup_dashboard"]
