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


def test_port_0_prints_the_port_really_bound() -> None:
    from socialfeat.serve import listen, url

    sock = listen("127.0.0.1", 0)
    try:
        port = sock.getsockname()[1]
        assert port != 0 and url("127.0.0.1", sock) == f"http://127.0.0.1:{port}/"
    finally:
        sock.close()


def test_listening_beyond_this_machine_warns_that_there_is_no_authentication() -> None:
    from socialfeat.serve import exposure_warning, listen

    for host, exposed in (("0.0.0.0", True), ("127.0.0.1", False), ("localhost", False)):
        sock = listen(host, 0)
        try:
            warning = exposure_warning(host, sock)
        finally:
            sock.close()
        assert (warning is not None) == exposed, host
        if warning is not None:
            assert warning.startswith(f"--host {host}: the explorer is reachable from other machines")
            assert "no authentication" in warning and "\n" not in warning


def test_serve_on_every_network_warns_and_prints_the_bound_port(
    served_run: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import uvicorn

    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: None)
    capsys.readouterr()
    ok(["serve", str(served_run), "--host", "0.0.0.0", "--port", "0"])
    lines = capsys.readouterr().err.strip().splitlines()
    warnings = [line for line in lines if line.startswith("warning: ")]
    assert len(warnings) == 1 and "reachable from other machines and has no authentication" in warnings[0]
    url = next(line for line in lines if "socialfeat explorer: http://" in line)
    assert "http://0.0.0.0:0/" not in url and int(url.split("http://0.0.0.0:")[1].split("/")[0]) > 0


@pytest.mark.parametrize(
    ("host", "words"),
    [
        ("no.such.host.invalid", "cannot be resolved to an address"),
        ("999.1.1.1", "cannot be resolved to an address"),
        ("192.0.2.1", "cannot be bound: not an address of this machine"),  # TEST-NET-1: no machine has it
    ],
)
def test_a_bad_host_is_named_and_not_blamed_on_the_port(
    tmp_path: Path, host: str, words: str, capsys: pytest.CaptureFixture[str]
) -> None:
    line = fails(["serve", str(tmp_path), "--host", host, "--port", "0"], capsys)
    assert line.startswith(f"error: --host {host}: {words}"), line
    assert "--port" not in line
