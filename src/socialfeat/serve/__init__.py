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


MIN_TOKEN = 16  # characters: a shorter token could be guessed through the network


def serve(
    config: Config,
    run: str | os.PathLike[str],
    ready: Callable[[str, float], None] | None = None,
    token: str | None = None,
) -> None:
    """Load the run once, then serve it with uvicorn on ``config.serve.host:port`` until interrupted. With
    ``serve.writable`` the write endpoints are on; beyond loopback they need ``token``, else nothing starts."""
    try:
        import uvicorn

        from socialfeat.serve.app import create_app
        from socialfeat.serve.explorer import Explorer
    except ImportError as e:
        raise UserError("serve", f"the web explorer needs its extra: pip install 'socialfeat[serve]' ({e})") from None
    run = Path(run)
    if not run.is_dir():
        raise UserError(str(run), "no such run folder")
    writable = config.serve.writable
    if writable and token is not None:
        check_token(token)
    host = config.serve.host
    sock = listen(host, config.serve.port)  # a taken port is said before the run is loaded and before any URL
    port = sock.getsockname()[1]  # the port bound, also when any free one was asked for (0)
    if writable and token is None and not is_loopback(sock):
        sock.close()
        raise UserError(
            f"--host {host}",
            "a writable explorer reachable from other machines needs a token: give --token (or set "
            "SOCIALFEAT_TOKEN), or bind 127.0.0.1",
        )
    warning = exposure_warning(host, sock, guarded=writable and token is not None)
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
    app = create_app(explorer, token if writable else None)
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


def is_loopback(sock: socket.socket) -> bool:
    """Whether the socket listens on this machine only (127.0.0.0/8, ::1; ``localhost`` resolves to one)."""
    address = sock.getsockname()[0].split("%")[0]  # an IPv6 scope (fe80::1%eth0) is no part of the address
    return ipaddress.ip_address(address).is_loopback


def check_token(token: str) -> None:
    """A token that can guard writes: long enough not to be guessed, and sendable in an HTTP header. The token
    itself is never part of a message."""
    if len(token) < MIN_TOKEN:
        raise UserError(
            "--token",
            f"{len(token)} characters; use at least {MIN_TOKEN}, e.g. from "
            "python -c 'import secrets; print(secrets.token_urlsafe())'",
        )
    if not all(33 <= ord(c) < 127 for c in token):
        raise UserError("--token", "use visible ASCII characters only (no spaces): it travels in an HTTP header")


def exposure_warning(host: str, sock: socket.socket, guarded: bool = False) -> str | None:
    """One line when the socket listens beyond this machine (0.0.0.0, ::, a LAN address): browsing has no
    authentication, so whoever reaches the port browses the run and uploads images to search (writes, when on,
    need the token: ``guarded``); None on a loopback address."""
    if is_loopback(sock):
        return None
    writes = "; writes need the token" if guarded else ""
    return (
        f"--host {host}: the explorer is reachable from other machines and has no authentication; anyone who "
        f"reaches port {sock.getsockname()[1]} can browse this run and upload images{writes} (use 127.0.0.1 to keep "
        "it local)"
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
