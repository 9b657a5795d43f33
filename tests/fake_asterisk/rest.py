"""REST operations of the fake Asterisk, with Asterisk 22's status codes and error texts.

Error texts are those of res/ari/resource_channels.c, resource_bridges.c, resource_recordings.c
and resource_applications.c. Asterisk checks required parameters inside each operation, not in
the generated routing code, so a missing parameter gets that operation's own message.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .channels import HANGUP_REASONS, RECORDING_FORMATS, ari_timestamp
from .pbx import ASTERISK_ID

if TYPE_CHECKING:
    from .channels import Bridge, Channel
    from .server import FakeAsterisk

# Request parameters: the query merged with the fields of a JSON body object, as Asterisk
# reads them (RequestKey exists from aiohttp 3.12 on).
PARAMS: Any = web.RequestKey("params", dict) if hasattr(web, "RequestKey") else "params"

# Dialed or created channels in these states are not yet answered: operations that change the
# channel's state or place in the dialplan answer 412 (channel_state_invalid in Asterisk).
_UNANSWERED_OUTBOUND_STATES = frozenset({"Down", "Reserved", "Ringing"})

_BRIDGE_TYPES = frozenset(
    {"mixing", "holding", "dtmf_events", "proxy_media", "video_sfu", "video_single", "sdp_label"}
)
_IF_EXISTS = frozenset({"fail", "overwrite", "append"})
_TERMINATE_ON = frozenset({"none", "any", "*", "#"})
_CODECS = frozenset({"ulaw", "alaw", "gsm", "g722", "g729", "slin", "slin16", "opus", "h264"})


def error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message}, status=status)


def no_content() -> web.Response:
    return web.Response(status=204)


def ari_int(value: Any, default: int) -> int:
    """Convert a parameter as Asterisk's atoi() does: leading digits, 0 when there are none."""
    if value is None:
        return default
    if isinstance(value, int):
        return value
    match = re.match(r"\s*([+-]?\d+)", str(value))
    return int(match.group(1)) if match else 0


def ari_bool(value: Any) -> bool:
    """Read a boolean parameter as Asterisk's ast_true() does."""
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {"yes", "true", "y", "t", "1", "on"}


def ari_list(value: Any) -> list[str]:
    """Read a parameter that allows several values: a JSON array or a comma-separated string."""
    if value is None:
        return []
    if isinstance(value, list):
        return [str(item) for item in value]
    return [item for item in str(value).split(",")]


def parse_caller_id(value: str) -> tuple[str, str]:
    """Split a callerId parameter into (name, number) as ast_callerid_parse() does."""
    match = re.match(r'\s*"?([^"<]*?)"?\s*<([^>]*)>', value)
    if match:
        name, number = match.group(1).strip(), match.group(2).strip()
    elif re.fullmatch(r"[0-9*#+()\-. ]+", value.strip()):
        name, number = "", value.strip()
    else:
        name, number = value.strip(), ""
    # ast_shrink_phone_number() drops the separators of a phone number.
    if re.fullmatch(r"[0-9*#+()\-. ]+", number):
        number = re.sub(r"[()\-. ]", "", number)
    return name, number


class RestApi:
    """The ARI REST resources served under /ari."""

    def __init__(self, fake: FakeAsterisk) -> None:
        self.fake = fake
        self.pbx = fake.pbx

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/ari/asterisk/info", self.asterisk_info),
            web.get("/ari/applications", self.list_applications),
            web.get("/ari/applications/{app}", self.get_application),
            web.put("/ari/applications/{app}/eventFilter", self.filter_application),
            web.get("/ari/channels", self.list_channels),
            web.post("/ari/channels", self.originate),
            web.post("/ari/channels/create", self.create_channel),
            web.get("/ari/channels/{channel_id}", self.get_channel),
            web.post("/ari/channels/{channel_id}", self.originate),
            web.delete("/ari/channels/{channel_id}", self.hang_up),
            web.post("/ari/channels/{channel_id}/answer", self.answer),
            web.post("/ari/channels/{channel_id}/ring", self.ring),
            web.delete("/ari/channels/{channel_id}/ring", self.ring),
            web.post("/ari/channels/{channel_id}/continue", self.continue_in_dialplan),
            web.post("/ari/channels/{channel_id}/dial", self.dial),
            web.get("/ari/channels/{channel_id}/variable", self.get_variable),
            web.post("/ari/channels/{channel_id}/variable", self.set_variable),
            web.get("/ari/bridges", self.list_bridges),
            web.post("/ari/bridges", self.create_bridge),
            web.post("/ari/bridges/{bridge_id}", self.create_bridge),
            web.get("/ari/bridges/{bridge_id}", self.get_bridge),
            web.delete("/ari/bridges/{bridge_id}", self.destroy_bridge),
            web.post("/ari/bridges/{bridge_id}/addChannel", self.add_channel),
            web.post("/ari/bridges/{bridge_id}/removeChannel", self.remove_channel),
            web.post("/ari/bridges/{bridge_id}/record", self.record_bridge),
            # Recording names such as calltracking/2026/12/04/<channel id> span several path
            # segments once their %2F is decoded.
            web.post("/ari/recordings/live/{name:.+}/stop", self.stop_live_recording),
            web.get("/ari/recordings/live/{name:.+}", self.get_live_recording),
            web.get("/ari/recordings/stored", self.list_stored_recordings),
            web.get("/ari/recordings/stored/{name:.+}", self.get_stored_recording),
            web.delete("/ari/recordings/stored/{name:.+}", self.delete_stored_recording),
        ]

    # Every handler below is a coroutine without an await: it runs to its end at once, so the
    # events it sends are held back until its response is written (see Pbx.deferring).

    # Asterisk and applications

    async def asterisk_info(self, request: web.Request) -> web.Response:
        started = ari_timestamp(self.fake.started_at)
        sections = {
            "build": {"os": "Linux", "kernel": "6.1.0", "options": "", "machine": "x86_64",
                      "date": "2026-11-20 10:00:00 UTC", "user": "root"},
            "system": {"version": "22.10.1", "entity_id": ASTERISK_ID},
            "config": {"name": "fake-asterisk", "default_language": "en",
                       "setid": {"user": "asterisk", "group": "asterisk"}},
            "status": {"startup_time": started, "last_reload_time": started},
        }
        only = ari_list(request[PARAMS].get("only"))
        if only:
            sections = {key: value for key, value in sections.items() if key in only}
        return web.json_response(sections)

    async def list_applications(self, request: web.Request) -> web.Response:
        return web.json_response([self._application(app) for app in sorted(self.fake.registered_apps)])

    async def get_application(self, request: web.Request) -> web.Response:
        app = request.match_info["app"]
        if app not in self.fake.registered_apps:
            return error(404, "Application not found")
        return web.json_response(self._application(app))

    async def filter_application(self, request: web.Request) -> web.Response:
        """Set the application's allowed and disallowed event types (PUT .../eventFilter).

        A list given replaces that list, a list left out keeps it, and an empty body clears both.
        """
        app = request.match_info["app"]
        if app not in self.fake.registered_apps:
            return error(404, "Application not found")
        params = request[PARAMS]
        allowed, disallowed = self.fake.event_filters.get(app, (frozenset(), frozenset()))
        updates = {}
        for key in ("allowed", "disallowed"):
            if key not in params:
                continue
            entries = params[key]
            if not isinstance(entries, list) or not all(
                isinstance(entry, dict) and isinstance(entry.get("type"), str) for entry in entries
            ):
                return error(400, "Invalid format definition")
            updates[key] = frozenset(entry["type"] for entry in entries)
        if not any(key in params for key in ("allowed", "disallowed")):
            updates = {"allowed": frozenset(), "disallowed": frozenset()}
        self.fake.event_filters[app] = (
            updates.get("allowed", allowed), updates.get("disallowed", disallowed)
        )
        return web.json_response(self._application(app))

    def _application(self, app: str) -> dict[str, Any]:
        channel_ids = [channel.id for channel in self.pbx.channels.values()
                       if app in self.pbx.channel_apps(channel)]
        bridge_ids = [bridge.id for bridge in self.pbx.bridges.values() if app in bridge.apps]
        allowed, disallowed = self.fake.event_filters.get(app, (frozenset(), frozenset()))
        return {"name": app, "channel_ids": channel_ids, "bridge_ids": bridge_ids,
                "endpoint_ids": [], "device_names": [],
                "events_allowed": [{"type": name} for name in sorted(allowed)],
                "events_disallowed": [{"type": name} for name in sorted(disallowed)]}

    # Channels

    def _find_control(self, channel_id: str) -> Channel | web.Response:
        """Return the channel if it is in Stasis, else Asterisk's 404 or 409 response."""
        channel = self.pbx.channels.get(channel_id)
        if channel is None:
            return error(404, "Channel not found")
        if channel.stasis_app is None:
            return error(409, "Channel not in Stasis application")
        return channel

    def _control_in_valid_state(self, channel_id: str) -> Channel | web.Response:
        channel = self._find_control(channel_id)
        if isinstance(channel, web.Response):
            return channel
        if channel.state in _UNANSWERED_OUTBOUND_STATES:
            return error(412, "Channel in invalid state")
        return channel

    async def list_channels(self, request: web.Request) -> web.Response:
        return web.json_response([channel.to_json() for channel in self.pbx.channels.values()])

    async def get_channel(self, request: web.Request) -> web.Response:
        channel = self.pbx.channels.get(request.match_info["channel_id"])
        if channel is None:
            return error(404, "Channel not found")
        return web.json_response(channel.to_json())

    def _variables(self, params: dict[str, Any]) -> dict[str, str] | web.Response:
        variables = params.get("variables") or {}
        if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
            return error(400, "Only string values in the 'variables' object allowed")
        return dict(variables)

    async def originate(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        channel_id = request.match_info.get("channel_id") or params.get("channelId")
        variables = self._variables(params)
        if isinstance(variables, web.Response):
            return variables
        endpoint = params.get("endpoint") or ""
        if not endpoint:
            return error(400, "Endpoint must be specified")
        if params.get("originator") and params.get("formats"):
            return error(400, "Originator and formats can't both be specified")
        technology, _, resource = endpoint.partition("/")
        if not technology or not resource:
            return error(400, "Invalid endpoint specified")
        if not params.get("app") and not params.get("extension"):
            return error(400, "Application or extension must be specified")
        if params.get("originator") and params["originator"] not in self.pbx.channels:
            return error(400, "Provided originator channel was not found")
        for format_name in ari_list(params.get("formats")):
            if format_name.strip() not in _CODECS:
                return error(400, f"Provided format ({format_name.strip()}) was not found")
        if channel_id in self.pbx.channels or params.get("otherChannelId") in self.pbx.channels:
            return error(409, "Channel with given unique ID already exists")

        timeout = ari_int(params.get("timeout"), 30)
        channel = self.pbx.originate(
            endpoint, app=params.get("app"), app_args=params.get("appArgs"),
            context=params.get("context"), extension=params.get("extension"),
            priority=ari_int(params.get("priority"), 1), label=params.get("label"),
            caller_id=parse_caller_id(params.get("callerId") or ""),
            timeout=timeout if timeout > 0 else 30, channel_id=channel_id,
            other_channel_id=params.get("otherChannelId"), variables=variables)
        return web.json_response(channel.to_json())

    async def create_channel(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        variables = self._variables(params)
        if isinstance(variables, web.Response):
            return variables
        if params.get("originator") and params.get("formats"):
            return error(400, "Originator and formats can't both be specified")
        endpoint = params.get("endpoint") or ""
        if not endpoint:
            return error(400, "Endpoint must be specified")
        technology, _, resource = endpoint.partition("/")
        if not technology or not resource:
            return error(400, "Invalid endpoint specified")
        originator = self.pbx.channels.get(params.get("originator") or "")
        if originator is None:
            for format_name in ari_list(params.get("formats")):
                if format_name.strip() not in _CODECS:
                    return error(400, f"Provided format ({format_name.strip()}) was not found")
        channel_id = params.get("channelId")
        if channel_id in self.pbx.channels or params.get("otherChannelId") in self.pbx.channels:
            return error(409, "Channel with given unique ID already exists")

        # NOTE: Asterisk 22 does not check that `app` is given. A channel created without it
        # fails to enter Stasis and is hung up, and the fake does the same.
        channel = self.pbx.create_channel(
            endpoint, params.get("app") or "", params.get("appArgs"), channel_id=channel_id,
            other_channel_id=params.get("otherChannelId"), originator=originator,
            variables=variables)
        return web.json_response(channel.to_json())

    async def hang_up(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        channel = self.pbx.channels.get(request.match_info["channel_id"])
        if channel is None:
            return error(404, "Channel not found")
        reason, reason_code = params.get("reason"), params.get("reason_code")
        if reason and reason_code:
            return error(400, "The reason and reason_code can't both be specified")
        if reason_code:
            if not re.match(r"\s*[+-]?\d", str(reason_code)):
                return error(400, "Invalid reason for hangup reason code provided")
            cause = ari_int(reason_code, 0)
        elif reason:
            if reason not in HANGUP_REASONS:
                return error(400, "Invalid reason for hangup reason provided")
            cause = HANGUP_REASONS[reason]
        else:
            cause = 16
        self.pbx.soft_hangup(channel, cause)
        return no_content()

    async def answer(self, request: web.Request) -> web.Response:
        channel = self._control_in_valid_state(request.match_info["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        self.pbx.answer(channel)
        return no_content()

    async def ring(self, request: web.Request) -> web.Response:
        # Ringing is an indication towards the caller: Asterisk sends no event for it.
        channel = self._control_in_valid_state(request.match_info["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        return no_content()

    async def continue_in_dialplan(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        channel = self._control_in_valid_state(request.match_info["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        context_param, extension_param = params.get("context"), params.get("extension")
        if not context_param:
            context, extension = channel.context, extension_param or channel.exten
        else:
            context, extension = context_param, extension_param or "s"
        label = params.get("label")
        priority = ari_int(params.get("priority"), 0)
        if label:
            # NOTE: the fake has no dialplan to look labels up in. A numeric label is taken as
            # the priority, and any other label is accepted and recorded with priority 1.
            priority = ari_int(label, 1) if re.match(r"\s*\d", label) else 1
            if priority == 0:
                return error(400, "Requested priority is illegal")
        elif not priority:
            priority = channel.priority + 1 if not context_param and not extension_param else 1
        self.pbx.continue_in_dialplan(channel, context, extension, priority, label)
        return no_content()

    async def dial(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        channel = self._find_control(request.match_info["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        caller = self.pbx.channels.get(params.get("caller") or "")
        if channel.state not in ("Down", "Reserved"):
            return error(409, "Channel is not in the 'Down' state")
        if channel.dialstring is None:
            return error(409, "Dialing a channel not created by ARI")
        self.pbx.after_response(
            lambda: self.pbx.dial(channel, caller, max(ari_int(params.get("timeout"), 0), 0))
            if not channel.gone else None)
        return no_content()

    async def get_variable(self, request: web.Request) -> web.Response:
        name = request[PARAMS].get("variable")
        if not name:
            return error(400, "Variable name is required")
        channel = self.pbx.channels.get(request.match_info["channel_id"])
        if channel is None:
            return error(404, "Provided channel was not found")
        if name not in channel.variables:
            return error(404, "Provided variable was not found")
        return web.json_response({"value": channel.variables[name]})

    async def set_variable(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        name = params.get("variable")
        if not name:
            return error(400, "Variable name is required")
        channel = self._find_control(request.match_info["channel_id"])
        if isinstance(channel, web.Response):
            return channel
        self.pbx.set_variable(channel, name, str(params.get("value") or ""))
        return no_content()

    # Bridges

    def _find_bridge(self, bridge_id: str) -> Bridge | web.Response:
        bridge = self.pbx.bridges.get(bridge_id)
        if bridge is None:
            return error(404, "Bridge not found")
        return bridge

    def _channels_for_bridge(self, params: dict[str, Any]) -> list[Channel] | web.Response:
        ids = [channel_id for channel_id in ari_list(params.get("channel")) if channel_id]
        if not ids:
            return error(400, "Missing parameter channel")
        channels = []
        for channel_id in ids:
            channel = self.pbx.channels.get(channel_id)
            if channel is None:
                return error(400, "Channel not found")
            if channel.stasis_app is None:
                return error(422, "Channel not in Stasis application")
            channels.append(channel)
        return channels

    async def list_bridges(self, request: web.Request) -> web.Response:
        return web.json_response([bridge.to_json() for bridge in self.pbx.bridges.values()])

    async def create_bridge(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        bridge_id = request.match_info.get("bridge_id") or params.get("bridgeId")
        if bridge_id and bridge_id in self.pbx.bridges:
            return error(409, f"Bridge with id '{bridge_id}' already exists")
        types = [item.strip() for item in ari_list(params.get("type") or "mixing")]
        if not set(types) <= _BRIDGE_TYPES:
            return error(500, f"Unable to create bridge. Possible duplicate bridge id "
                              f"'{bridge_id or '(null)'}'")
        bridge_type = "holding" if "holding" in types and "mixing" not in types else "mixing"
        bridge = self.pbx.create_bridge(bridge_id, params.get("name") or "", bridge_type)
        return web.json_response(bridge.to_json())

    async def get_bridge(self, request: web.Request) -> web.Response:
        bridge = self._find_bridge(request.match_info["bridge_id"])
        if isinstance(bridge, web.Response):
            return bridge
        return web.json_response(bridge.to_json())

    async def destroy_bridge(self, request: web.Request) -> web.Response:
        bridge = self._find_bridge(request.match_info["bridge_id"])
        if isinstance(bridge, web.Response):
            return bridge
        self.pbx.destroy_bridge(bridge)
        return no_content()

    async def add_channel(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        bridge = self._find_bridge(request.match_info["bridge_id"])
        if isinstance(bridge, web.Response):
            return bridge
        channels = self._channels_for_bridge(params)
        if isinstance(channels, web.Response):
            return channels
        inhibit = ari_bool(params.get("inhibitConnectedLineUpdates", False))
        for channel in channels:
            self.pbx.add_to_bridge(bridge, channel, inhibit_connected_line=inhibit)
        return no_content()

    async def remove_channel(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        bridge = self._find_bridge(request.match_info["bridge_id"])
        if isinstance(bridge, web.Response):
            return bridge
        channels = self._channels_for_bridge(params)
        if isinstance(channels, web.Response):
            return channels
        if any(channel.bridge_id != bridge.id for channel in channels):
            return error(422, "Channel not in this bridge")
        for channel in channels:
            self.pbx.remove_from_bridge(channel)
        return no_content()

    async def record_bridge(self, request: web.Request) -> web.Response:
        params = request[PARAMS]
        bridge = self._find_bridge(request.match_info["bridge_id"])
        if isinstance(bridge, web.Response):
            return bridge
        name = params.get("name") or ""
        recording_format = params.get("format") or ""
        max_duration = ari_int(params.get("maxDurationSeconds"), 0)
        if max_duration < 0:
            return error(400, "max_duration_seconds cannot be negative")
        if ari_int(params.get("maxSilenceSeconds"), 0) < 0:
            return error(400, "max_silence_seconds cannot be negative")
        if params.get("terminateOn", "none") not in _TERMINATE_ON:
            return error(400, "terminateOn invalid")
        if_exists = params.get("ifExists", "fail")
        if if_exists not in _IF_EXISTS:
            return error(400, "ifExists invalid")
        if recording_format not in RECORDING_FORMATS:
            return error(422, "specified format is unknown on this system")
        if not name:
            return error(500, "Error parsing request")
        if ".." in name:
            return error(400, "Recording name invalid")
        failure = self.fake.take_recording_failure()
        if failure is not None:
            return error(*failure)
        if name in self.pbx.live_recordings or (
                if_exists == "fail" and name in self.pbx.stored_recordings):
            return error(409, f"Recording '{name}' already exists and can not be overwritten")

        recording = self.pbx.start_recording(bridge, name, recording_format, max_duration)
        response = web.json_response(recording.to_json(), status=201)
        response.headers["Location"] = f"/recordings/live/{name}"
        return response

    # Recordings

    async def get_live_recording(self, request: web.Request) -> web.Response:
        recording = self.pbx.live_recordings.get(request.match_info["name"])
        if recording is None:
            return error(404, "Recording not found")
        return web.json_response(recording.to_json())

    async def stop_live_recording(self, request: web.Request) -> web.Response:
        recording = self.pbx.live_recordings.get(request.match_info["name"])
        if recording is None:
            return error(404, "Recording not found")
        self.pbx.finish_recording(recording)
        return no_content()

    async def list_stored_recordings(self, request: web.Request) -> web.Response:
        return web.json_response([{"name": name, "format": recording_format}
                                  for name, recording_format in self.pbx.stored_recordings.items()])

    async def get_stored_recording(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in self.pbx.stored_recordings:
            return error(404, "Recording not found")
        return web.json_response({"name": name, "format": self.pbx.stored_recordings[name]})

    async def delete_stored_recording(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if self.pbx.stored_recordings.pop(name, None) is None:
            return error(404, "Recording not found")
        return no_content()

