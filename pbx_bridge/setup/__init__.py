"""Declarative setup: companies, sources, sites, pools and numbers loaded from a TOML file."""

from pbx_bridge.setup.loader import LoadReport, apply_setup
from pbx_bridge.setup.schema import Problem, SetupError, SetupSpec, parse_setup

__all__ = ["LoadReport", "Problem", "SetupError", "SetupSpec", "apply_setup", "parse_setup"]
