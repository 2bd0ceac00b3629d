"""The daemon's TLS listener (`daemon.tls_listen`) and the client's `https://` targets."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Daemon
from tests.tlsfiles import TestCA
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


def test_client_certificates_are_required_when_the_daemon_names_their_authority(
    tmp_path: Path, make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = TestCA(tmp_path / "ca")
    server = ca.issue("daemon", server=True)
    alice = ca.issue("alice", server=False)
    stranger_ca = TestCA(tmp_path / "other", "other CA")
    mallory = stranger_ca.issue("mallory", server=False)
    tls_port = free_ports(1)[0]
    config = tmp_path / "tms.yaml"
    config.write_text(
        f"daemon:\n  tls_listen: 127.0.0.1:{tls_port}\n  tls_cert: {server.cert}\n"
        f"  tls_key: {server.key}\n  tls_client_ca: {ca.pem}\n"
    )
    daemon = make_daemon(f"--config={config}")
    target = f"https://localhost:{tls_port}"
    for name in ("TMS_CA_FILE", "TMS_CERT_FILE", "TMS_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return daemon.cli("lease", "list", "-z", *args, target=target)

    # --ca verifies the daemon; with no client certificate the daemon turns the client away.
    refused = cli(f"--ca={ca.pem}")
    assert refused.returncode == 1
    assert "refused the connection" in refused.stderr
    assert "--cert and --key" in refused.stderr
    # A certificate from another authority is turned away too.
    stranger = cli(f"--ca={ca.pem}", f"--cert={mallory.cert}", f"--key={mallory.key}")
    assert stranger.returncode == 1
    assert "may not trust the client certificate" in stranger.stderr
    # With its certificate the client gets in (its API token still found on this machine).
    admitted = cli(f"--ca={ca.pem}", f"--cert={alice.cert}", f"--key={alice.key}")
    assert admitted.returncode == 0, admitted.stderr
    # The wrong authority for the daemon's certificate is said plainly.
    wrong_ca = cli(f"--ca={stranger_ca.pem}", f"--cert={alice.cert}", f"--key={alice.key}")
    assert wrong_ca.returncode == 1
    [error] = [line for line in wrong_ca.stderr.splitlines() if line.startswith("error:")]
    assert f"is not signed by the authority in {stranger_ca.pem}" in error

    # The client library and the environment variables the console and notebook read.
    with TmsClient(target, timeout=10, ca_file=ca.pem) as client, pytest.raises(ClientError):
        client.list_leases()
    monkeypatch.setenv("TMS_CA_FILE", str(ca.pem))
    monkeypatch.setenv("TMS_CERT_FILE", str(alice.cert))
    monkeypatch.setenv("TMS_KEY_FILE", str(alice.key))
    with TmsClient(target, timeout=10) as client:
        assert client.list_leases() == []

    # A target saved with its TLS files needs no flags afterwards.
    targets = tmp_path / "targets.yaml"
    env = {**daemon.env(), "TMS_TARGETS_FILE": str(targets)}
    del env["TMS_TARGET"]
    saved = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "target", "add", "secure", target,
         f"--ca={ca.pem}", f"--cert={alice.cert}", f"--key={alice.key}"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert saved.returncode == 0, saved.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "tms_core.cli.main", "-t", "secure", "lease", "list", "-z"],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
