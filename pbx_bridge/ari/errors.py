"""Exceptions of the ARI client, and the one place that turns transport failures into them.

Callers catch these types only: no aiohttp or HttpError exception leaves the `pbx_bridge.ari`
package.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from http import HTTPStatus

import aiohttp

from pbx_bridge.ari.http import HttpError


class AriError(Exception):
    """A failed ARI request.

    `operation` is the method and path template from the ARI specification, such as
    "POST /channels/{channelId}/dial"; `resource_id` is the channel, bridge, recording or
    application id it was made on; `status` is the HTTP status (None when no response came);
    `asterisk_message` is the text of Asterisk's `{"message": ...}` response body.
    """

    def __init__(
        self,
        operation: str,
        resource_id: str | None,
        status: int | None,
        asterisk_message: str,
    ) -> None:
        self.operation = operation
        self.resource_id = resource_id
        self.status = status
        self.asterisk_message = asterisk_message
        target = f" on {resource_id}" if resource_id else ""
        status_text = f"{status} " if status is not None else ""
        super().__init__(f"{operation}{target} failed: {status_text}{asterisk_message}")


class NotFound(AriError):
    """The channel, bridge, recording or application does not exist (any more)."""


class NotInStasis(AriError):
    """The channel exists but is not in a Stasis application, for example not yet or no longer."""


class Conflict(AriError):
    """The request conflicts with the current state, such as an id or recording name in use."""


class InvalidState(AriError):
    """The channel is in a state that does not allow the operation (HTTP 412)."""


class BadRequest(AriError):
    """Asterisk rejected the parameters (HTTP 400 or 422)."""


class Unauthorized(AriError):
    """Asterisk rejected the ARI user name or password (HTTP 401 or 403)."""


class ServerError(AriError):
    """Asterisk failed to carry out a valid request (HTTP 5xx) or sent an unreadable response."""


class AriUnavailable(AriError):
    """No response from Asterisk because the connection was refused or reset, or timed out."""


# Message texts of Asterisk 22 for a channel that exists outside Stasis. Channel operations respond
# 409 with the first, which the specification words the second way, and addChannel responds 422.
# For a channel that is gone, addChannel responds 400 "Channel not found".
_NOT_IN_STASIS_MESSAGES = frozenset(
    {"Channel not in Stasis application", "Channel not in a Stasis application"}
)
_CHANNEL_NOT_FOUND_MESSAGE = "Channel not found"
_HTTP_STATUS_PHRASES = {status.value: status.phrase for status in HTTPStatus if status.value != 101}


def error_for_status(
    status: int, asterisk_message: str, *, operation: str, resource_id: str | None
) -> AriError:
    """Build the exception for an ARI response with an error status."""
    error_type: type[AriError]
    if status == 404:
        error_type = NotFound
    elif status == 400 and asterisk_message == _CHANNEL_NOT_FOUND_MESSAGE:
        error_type = NotFound
    elif status in (409, 422) and asterisk_message in _NOT_IN_STASIS_MESSAGES:
        error_type = NotInStasis
    elif status == 409:
        error_type = Conflict
    elif status == 412:
        error_type = InvalidState
    elif status in (400, 422):
        error_type = BadRequest
    elif status in (401, 403):
        error_type = Unauthorized
    elif status >= 500:
        error_type = ServerError
    else:
        error_type = AriError
    return error_type(operation, resource_id, status, asterisk_message)


@contextlib.contextmanager
def map_transport_errors(operation: str, resource_id: str | None) -> Iterator[None]:
    """Turn connection failures and timeouts inside the block into AriUnavailable."""
    try:
        yield
    except AriError:
        raise
    except (asyncio.TimeoutError, aiohttp.ServerTimeoutError) as error:
        raise AriUnavailable(operation, resource_id, None, "timed out") from error
    except (aiohttp.ClientError, HttpError) as error:
        raise AriUnavailable(operation, resource_id, None, describe_transport_error(error)) from error


def describe_transport_error(error: BaseException) -> str:
    """Return a short, secret-free description of a connection failure."""
    if isinstance(error, aiohttp.ClientConnectorError):
        os_error = error.os_error
        if isinstance(os_error, ConnectionRefusedError):
            cause = "connection refused"
        else:
            cause = os_error.strerror or str(os_error) or type(os_error).__name__
        return f"cannot connect to {error.host}:{error.port}: {cause}"
    if isinstance(error, HttpError):
        return str(error)
    if isinstance(error, aiohttp.ServerDisconnectedError):
        return "server closed the connection"
    if isinstance(error, aiohttp.WSServerHandshakeError):
        # aiohttp's message for any status other than 101 is "Invalid response status".
        if error.status in _HTTP_STATUS_PHRASES:
            return f"websocket handshake rejected: {error.status} {_HTTP_STATUS_PHRASES[error.status]}"
        return f"websocket handshake rejected: {error.status} {error.message}"
    if isinstance(error, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        # aiohttp words a missed websocket pong this way: "No PONG received after 10.0 seconds".
        return str(error) or "timed out"
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
