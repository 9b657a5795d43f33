"""A fake Asterisk 22 for tests: ARI REST and the events websocket on 127.0.0.1.

It answers with the paths, parameters, status codes and error texts of the Asterisk 22 ARI
specification, and sends the event sequences and JSON shapes of transcripts of Asterisk 22.10.
The fake dials nothing real: each endpoint's line follows a script set by the test.

    fake = FakeAsterisk(app="calltracking", username="pbx-bridge", password="secret")
    await fake.start()                       # fake.url == "http://127.0.0.1:<port>"
    fake.script_endpoint("PJSIP/office", Answer(after=0.05, hangup_after=None))
    fake.script_endpoint("PJSIP/busy", Busy(after=0.02))   # also NoAnswer(), Fail(cause=34)
    call = await fake.incoming_call("74951110001", caller_number="+79161234567",
                                    caller_name="Ivan", endpoint="PJSIP/trunk")
    await fake.wait_for(lambda: fake.is_bridged(call.channel_id), timeout=5)
    await fake.caller_hangs_up(call.channel_id, cause=16)  # any channel, after= delays it
    await fake.wait_call_ended(call)
    await fake.drop_websockets(refuse_for=0.2)  # channels stay in Stasis, nothing is replayed
    fake.fail_recordings(status=500)            # bridge recordings fail like a missing spool folder
    fake.requests        # RecordedRequest(method, path, params, status), path without /ari
    fake.events          # events delivered to websockets, each with its "application"
    fake.undelivered_events                     # events sent while no websocket was attached
    call.fell_back       # dict: where the channel went on `continue` or when Stasis() failed
    await fake.stop()

Queries: `channel_exists(id)`, `live_channels()`, `channel(id)`, `is_bridged(id)`,
`is_ringing(endpoint)`, `websocket_count`, `event_types(id)`, `calls`, `fallbacks`.

Behaviour that differs from a first guess, taken from Asterisk's sources:

- A channel made by `POST /channels/create` enters Stasis `stasis_entry_delay` seconds (default
  0.01) after the REST answer; REST calls on it before its StasisStart answer 409.
- A dial that reaches its timeout hangs the leg up softly (ChannelHangupRequest cause 32, soft)
  and no Dial NOANSWER is sent; ChannelDestroyed then has cause 16.
- Dial events carry the dialed leg as `peer` and no `caller`, even when `caller` was given.
- Only channels the application created or originated get ChannelDestroyed after StasisEnd.

The `fake_asterisk` fixture is in `tests/fake_asterisk/fixtures.py`; add
`pytest_plugins = ["tests.fake_asterisk.fixtures"]` to a conftest.py to use it elsewhere.
"""

from .pbx import Call
from .scripts import Answer, Busy, Fail, LineBehaviour, NoAnswer
from .server import FakeAsterisk, RecordedRequest

__all__ = [
    "Answer",
    "Busy",
    "Call",
    "Fail",
    "FakeAsterisk",
    "LineBehaviour",
    "NoAnswer",
    "RecordedRequest",
]
