"""Deliveries of call data to webhooks, Google Analytics 4 and Yandex Metrica through an outbox.

The call flow writes outbox rows with `outbox.enqueue_call_event` in its own transaction; the
`worker.DeliveryWorker` sends them later with retries. This module imports nothing heavy, because
`pbx_bridge.config` imports `checks` while it loads the configuration.
"""
