"""The daemon's TLS listener (`daemon.tls_listen`) and the client's `https://` targets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tms_core.api.client import ClientError, TmsClient
from tms_core.backends.local import free_ports


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_clients_reach_the_tls_listener_with_https_targets(
    tmp_path: Path, make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    tls_port = free_ports(1)[0]
    config = tmp_path / "tms.yaml"
    config.write_text(
        f"daemon:\n  tls_listen: 127.0.0.1:{tls_port}\n  tls_cert: {cert}\n  tls_key: {key}\n"
    )
    daemon = make_daemon(f"--config={config}")
    target = f"https://localhost:{tls_port}"

    monkeypatch.setenv("TMS_CA_FILE", str(cert))
    with TmsClient(target, timeout=10) as client:
        assert client.list_leases() == []
    done = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "lease", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**daemon.env(), "TMS_TARGET": target, "TMS_CA_FILE": str(cert)},
    )
    assert done.returncode == 0, done.stderr
    assert "CERTIFICATE_VERIFY_FAILED" not in done.stderr

    # Without the certificate's authority the handshake fails, and plain gRPC is refused.
    monkeypatch.delenv("TMS_CA_FILE")
    with TmsClient(target, timeout=5) as client, pytest.raises(ClientError):
        client.list_leases()
    with TmsClient(f"127.0.0.1:{tls_port}", timeout=5) as client, pytest.raises(ClientError):
        client.list_leases()


def test_a_tls_listener_without_a_key_names_the_setting(
    tmp_path: Path, make_daemon: Callable[..., Daemon]
) -> None:
    cert, _ = self_signed(tmp_path)
    config = tmp_path / "tms.yaml"
    config.write_text(f"daemon:\n  tls_listen: 127.0.0.1:0\n  tls_cert: {cert}\n")
    with pytest.raises(RuntimeError, match=r"daemon\.tls_key: daemon\.tls_listen needs it"):
        make_daemon(f"--config={config}")
