"""The `fake_asterisk` pytest fixture: a started FakeAsterisk, stopped after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .server import FakeAsterisk

ARI_USERNAME = "pbx-bridge"
ARI_PASSWORD = "secret"


@pytest.fixture
async def fake_asterisk() -> AsyncIterator[FakeAsterisk]:
    fake = FakeAsterisk(app="calltracking", username=ARI_USERNAME, password=ARI_PASSWORD)
    await fake.start()
    yield fake
    await fake.stop()
