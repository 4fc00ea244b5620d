"""``socialfeat serve``: binds 127.0.0.1 unless told otherwise, takes its limits from flags, and fails in one line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import fails, ok


def test_serve_defaults_to_localhost_and_passes_limits(served_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    seen = {}

    def fake_run(self, sockets=None) -> None:  # noqa: ANN001
        seen.update(host=self.config.host, port=self.config.port)
        from socialfeat.serve.app import BodyLimit

        seen["limit"] = next(m.kwargs["max_bytes"] for m in self.config.app.user_middleware if m.cls is BodyLimit)

    monkeypatch.setattr(uvicorn.Server, "run", fake_run)
    ok(["serve", str(served_run)])
    assert seen == {"host": "127.0.0.1", "port": 8000, "limit": 10_000_000}
    ok(["serve", str(served_run), "--host", "0.0.0.0", "--port", "8123", "--max-upload-mb", "2"])
    assert seen == {"host": "0.0.0.0", "port": 8123, "limit": 2_000_000}


def test_serve_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "no such run folder" in fails(["serve", str(tmp_path / "missing")], capsys)
    assert "not a run folder" in fails(["serve", str(tmp_path)], capsys)
    assert "--port" in fails(["serve", str(tmp_path), "--port", "70000"], capsys)


def test_a_taken_port_is_said_before_any_url(served_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    from socialfeat.cli import main

    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        capsys.readouterr()
        with pytest.raises(SystemExit) as exc:
            main(["serve", str(served_run), "--port", str(port)])
    printed = capsys.readouterr()
    assert exc.value.code == 2 and "http://" not in printed.out + printed.err
    assert printed.err.strip().splitlines() == [
        f"error: 127.0.0.1:{port}: cannot listen there: the port is taken (is another server running?); "
        "choose another --port"
    ]


def test_the_listening_socket_says_tcp_so_responses_are_not_held_back() -> None:
    """asyncio turns Nagle off (TCP_NODELAY) only on connections of a socket whose proto is IPPROTO_TCP; with the
    proto left 0 every response waited for the client's delayed ACK (~40 ms each, measured with bench/serve.py)."""
    import asyncio
    import socket

    from socialfeat.serve import listen

    sock = listen("127.0.0.1", 0)
    try:
        assert sock.proto == socket.IPPROTO_TCP

        async def nodelay_of_an_accepted_connection() -> int:
            seen: list[int] = []

            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                seen.append(writer.get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                writer.close()

            server = await asyncio.start_server(handle, sock=sock)
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()
            server.close()
            return seen[0]

        assert asyncio.run(nodelay_of_an_accepted_connection()) != 0
    finally:
        sock.close()
