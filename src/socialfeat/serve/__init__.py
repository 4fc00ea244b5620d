"""``serve``: the web explorer — a page and a JSON API over a run, for browsing neighbours under learned and
ImageNet features, uploading new images and seeing who they would reach."""

from __future__ import annotations

import errno
import gc
import ipaddress
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path

from socialfeat.config import Config
from socialfeat.errors import UserError

log = logging.getLogger(__name__)


def serve(
    config: Config,
    run: str | os.PathLike[str],
    ready: Callable[[str, float], None] | None = None,
) -> None:
    """Load the run once, then serve it with uvicorn on ``config.serve.host:port`` until interrupted."""
    try:
        import uvicorn

        from socialfeat.serve.app import create_app
        from socialfeat.serve.explorer import Explorer
    except ImportError as e:
        raise UserError("serve", f"the web explorer needs its extra: pip install 'socialfeat[serve]' ({e})") from None
    run = Path(run)
    if not run.is_dir():
        raise UserError(str(run), "no such run folder")
    host = config.serve.host
    sock = listen(host, config.serve.port)  # a taken port is said before the run is loaded and before any URL
    port = sock.getsockname()[1]  # the port bound, also when any free one was asked for (0)
    warning = exposure_warning(host, sock)
    if warning is not None:
        log.warning(warning)
    if config.serve.torch_threads:
        import torch

        # Measured (bench/serve.py --server-set serve.torch_threads=0, 2 cores): one thread per forward pass halves
        # upload latency under load — requests already run in parallel; more threads per pass oversubscribe the cores.
        torch.set_num_threads(config.serve.torch_threads)
    try:
        explorer = Explorer(config, run)
    except BaseException:
        sock.close()
        raise
    app = create_app(explorer)
    # The loaded run is half a million long-lived objects at 423K items; a full collection walks them all (283 ms
    # measured), stalling every request in flight. Frozen, the collector skips them: only what requests allocate is
    # ever scanned.
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready(url(host, sock), explorer.load_seconds)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=host,
            port=port,
            log_level="warning",
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=256,  # beyond this uvicorn answers 503 instead of queueing without bound
        )
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def url(host: str, sock: socket.socket) -> str:
    """The address to open, with the port really bound (``--port 0`` binds any free one)."""
    return f"http://{host if ':' not in host else f'[{host}]'}:{sock.getsockname()[1]}/"


def exposure_warning(host: str, sock: socket.socket) -> str | None:
    """One line when the socket listens beyond this machine (0.0.0.0, ::, a LAN address): the explorer has no
    authentication, so whoever reaches the port browses the run and uploads images; None on a loopback address."""
    address = sock.getsockname()[0].split("%")[0]  # an IPv6 scope (fe80::1%eth0) is no part of the address
    if ipaddress.ip_address(address).is_loopback:
        return None
    return (
        f"--host {host}: the explorer is reachable from other machines and has no authentication; anyone who "
        f"reaches port {sock.getsockname()[1]} can browse this run and upload images (use 127.0.0.1 to keep it local)"
    )


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now, so that a taken port or an address this machine does not have is one
    line before anything else happens; uvicorn then serves on this very socket (no window for another process)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(
            f"--host {host}",
            f"cannot be resolved to an address ({e.strerror}); give an address of this machine, e.g. 127.0.0.1",
        ) from None
    family, _, _, _, address = infos[0]
    # IPPROTO_TCP named, not left 0 as socket.create_server leaves it: asyncio sets TCP_NODELAY only on connections
    # of a socket whose proto says TCP, and without it every response waited ~40 ms (Nagle × delayed ACK: by-id
    # p50 44 ms on one idle connection, 1 ms once named)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
        return sock
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRNOTAVAIL:  # resolved, but to an address no interface of this machine has
            raise UserError(
                f"--host {host}",
                f"cannot be bound: not an address of this machine ({e.strerror}); use 127.0.0.1 (this machine "
                "only), 0.0.0.0 (every network) or one of its own addresses",
            ) from None
        if e.errno == errno.EADDRINUSE:
            reason = "the port is taken (is another server running?)"
        elif e.errno == errno.EACCES:
            reason = "permission denied (ports below 1024 need administrator rights)"
        else:
            raise UserError(f"{host}:{port}", f"cannot listen there: {e.strerror or e}") from None
        raise UserError(f"{host}:{port}", f"cannot listen there: {reason}; choose another --port") from None
