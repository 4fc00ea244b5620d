"""``serve``: the web explorer — a page and a JSON API over a run, for browsing neighbours under learned and
ImageNet features, uploading new images and seeing who they would reach."""

from __future__ import annotations

import errno
import gc
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
    host, port = config.serve.host, config.serve.port
    sock = listen(host, port)  # a taken port is said before the run is loaded and before any URL is printed
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
        ready(f"http://{host if ':' not in host else f'[{host}]'}:{port}/", explorer.load_seconds)
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


def listen(host: str, port: int) -> socket.socket:
    """Bind and listen on ``host:port`` now, so that a taken port or an address this machine does not have is one
    line before anything else happens; uvicorn then serves on this very socket (no window for another process)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise UserError(f"--host {host}", f"not an address of this machine ({e.strerror})") from None
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
        reason = "the port is taken (is another server running?)" if e.errno == errno.EADDRINUSE else e.strerror
        raise UserError(f"{host}:{port}", f"cannot listen there: {reason}; choose another --port") from None
