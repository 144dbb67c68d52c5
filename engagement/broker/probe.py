"""Questions asked of a port or a broker: is it free, does it accept, does it answer."""

from __future__ import annotations

import asyncio
import concurrent.futures
import errno
import logging
import socket

from aiokafka.admin import AIOKafkaAdminClient

logger = logging.getLogger(__name__)


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # Connections of a broker stopped a moment ago linger in TIME_WAIT;
        # they do not stop Kafka from listening, so they must not stop us.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def port_accepts(host: str, port: int, timeout: float) -> bool:
    """Whether something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def kafka_answers(bootstrap_servers: str, timeout: float) -> bool:
    """Whether the brokers at ``bootstrap_servers`` answer a metadata request.

    Meant for synchronous code. Called inside a running event loop it still
    works, on a thread of its own, but blocks that loop until it returns.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_describe_cluster(bootstrap_servers, timeout))

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(asyncio.run, _describe_cluster(bootstrap_servers, timeout))
        return future.result()


async def _describe_cluster(bootstrap_servers: str, timeout: float) -> bool:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=max(1, int(timeout * 1000)),
    )
    try:
        cluster = await asyncio.wait_for(_start_and_describe(admin), timeout)
    except Exception as exc:
        # Refused, timed out or garbled: any failure means it does not answer.
        logger.debug("No metadata from %s: %r", bootstrap_servers, exc)
        return False
    finally:
        await admin.close()

    # A broker that is still registering with its controller answers with an
    # empty broker list; it cannot serve produce or fetch requests yet.
    brokers = cluster.get("brokers") or []
    logger.debug("Metadata from %s lists %s broker(s)", bootstrap_servers, len(brokers))
    return bool(brokers)


async def _start_and_describe(admin: AIOKafkaAdminClient) -> dict:
    await admin.start()
    return await admin.describe_cluster()
