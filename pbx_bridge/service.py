"""`pbx-bridge serve`: the ARI worker and the HTTP server in one process, with a clean shutdown."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable

from aiohttp import web
from sqlalchemy.exc import SQLAlchemyError

from pbx_bridge.config import Config
from pbx_bridge.http.app import AppContext, build_app
from pbx_bridge.logs import setup_logging
from pbx_bridge.storage import Database
from pbx_bridge.storage.migrations import upgrade

log = logging.getLogger("pbx_bridge.service")


class Service:
    """Starts and stops the parts `serve` runs; tests drive it the same way the CLI does."""

    def __init__(
        self,
        config: Config,
        *,
        with_ari: bool = True,
        with_http: bool = True,
        with_delivery: bool = True,
    ) -> None:
        self.config = config
        self.with_ari = with_ari
        self.with_http = with_http
        self.with_delivery = with_delivery and config.delivery.enabled
        self.database = Database(config.database.url, echo=config.database.echo)
        self.ari = None
        self.stasis = None
        self._runner: web.AppRunner | None = None
        self._ari_task: asyncio.Task[None] | None = None
        self.delivery = None

    async def start(self) -> None:
        log.info(
            "starting pbx-bridge, database %s, event loop %s",
            self.database.display_url, type(asyncio.get_running_loop()).__module__.split(".")[0],
        )
        if self.config.database.auto_upgrade:
            await upgrade(self.config.database.url)
            log.info("database schema up to date")

        self._start_delivery()
        if self.with_ari:
            self._start_ari()
        if self.with_http:
            await self._start_http()

    async def stop(self) -> None:
        log.info("stopping pbx-bridge")
        if self._runner is not None:
            await self._runner.cleanup()
        if self.delivery is not None:
            await self.delivery.stop()
        if self._ari_task is not None:
            self._ari_task.cancel()
            await asyncio.gather(self._ari_task, return_exceptions=True)
        if self.stasis is not None:
            await self.stasis.close()
        if self.ari is not None:
            await self.ari.close()
        await self.database.close()
        log.info("pbx-bridge stopped")

    @property
    def http_port(self) -> int | None:
        """The bound port, which differs from the configured one when that was 0."""
        if self._runner is None:
            return None
        for site in self._runner.sites:
            server = getattr(site, "_server", None)
            if server is not None and server.sockets:
                return server.sockets[0].getsockname()[1]
        return None

    def _start_ari(self) -> None:
        from pbx_bridge.ari import AriClient
        from pbx_bridge.calls.stasis import StasisApp

        self.ari = AriClient.from_config(self.config.ari)
        self.stasis = StasisApp(self.ari, self.database, self.config)
        if self.delivery is not None:
            self.stasis.journal.on_enqueued = self.delivery.wake
        self._ari_task = asyncio.create_task(
            self.ari.run(self.stasis.handle_event, on_connect=self.stasis.reconcile),
            name="ari-websocket",
        )

    def _start_delivery(self) -> None:
        from pbx_bridge.delivery import outbox
        from pbx_bridge.delivery.worker import DeliveryWorker

        # The call flow writes outbox rows even in a process that runs no worker.
        outbox.configure(self.config)
        if self.with_delivery:
            self.delivery = DeliveryWorker(self.database, self.config)
            self.delivery.start()

    async def _start_http(self) -> None:
        app = build_app(AppContext(self.config, self.database, self.ari))
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self.config.http_host,
            self.config.http_port,
            reuse_port=self.config.http.reuse_port,
            # aiohttp's default of 128 pending connections overflows when hundreds of visitors
            # connect at once. The kernel then drops their SYNs, and they retry a second later.
            backlog=1024,
        )
        await site.start()
        log.info("HTTP listening on %s:%s", self.config.http_host, self.http_port)


def run_service(
    config: Config,
    *,
    log_format: str | None = None,
    log_level: str | None = None,
    with_ari: bool = True,
    with_http: bool = True,
    with_delivery: bool = True,
) -> int:
    setup_logging(log_level or config.log.level, log_format or config.log.format)
    service = Service(
        config, with_ari=with_ari, with_http=with_http, with_delivery=with_delivery
    )
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        return runner.run(_serve(service))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """Return uvloop's loop factory where uvloop is installed, else None for asyncio's own loop.

    A call is a few dozen event-loop wake-ups spread over its seconds, and uvloop makes each one
    cheaper. bench/call_flow.py on PostgreSQL averaged 6% less CPU per call with it, over six
    pairs of runs whose single results vary by more than that.
    """
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _serve(service: Service) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)

    try:
        await service.start()
    except (OSError, SQLAlchemyError) as error:
        # One line an operator can act on (port taken, database down), not a traceback.
        log.error("cannot start: %s", str(error).splitlines()[0] if str(error) else type(error).__name__)
        await service.stop()
        return 1
    # Everything loaded so far (SQLAlchemy's metadata, phone number and user agent rules) lives
    # as long as the process. Frozen, the collector no longer walks it: a full collection took
    # about 120 ms before, a pause every few seconds for every request in flight.
    gc.freeze()
    await stop.wait()
    await service.stop()
    return 0
