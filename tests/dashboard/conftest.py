"""The dashboard tests reuse the admin API's application and seeded journal."""

from tests.admin.conftest import world  # noqa: F401
