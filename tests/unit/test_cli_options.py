"""How command lines parse, with a recording stand-in for the client (no daemon).

`-t` and `-z` work before and after the subcommand (TMS documents them after), the one after
wins; `lease create` prints only the id; `-z` lines are tab-separated; the spec file and the
flags reach the client as documented; parser mistakes are one line.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tms_core.api import client as api_client
from tms_core.api import tms_pb2 as pb
from tms_core.cli.main import cli
from tms_core.lease_request import LeaseOptions, ModelRequest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "models" / "add_sub"


def a_lease(state: int = pb.LEASE_READY, reason: str = "") -> pb.Lease:
    return pb.Lease(
        id="l-123",
        name="adder",
        state=state,
        reason=reason,
        models=[pb.ModelStatus(name="add_sub", state=pb.MODEL_READY)],
        endpoints=pb.Endpoints(http="127.0.0.1:1", grpc="127.0.0.1:2"),
        expires_at=1795000000.0,
        pool="shared",
    )


class FakeClient:
    """Records the target it was made for and each call; answers with canned messages."""

    made: list[FakeClient] = []

    def __init__(self, target: str, *, token: str | None = None, **tls: Any) -> None:
        self.target = target
        self.token = token
        self.tls = tls
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        FakeClient.made.append(self)

    def close(self) -> None:
        pass

    def acquire(self, *args: Any, **kwargs: Any) -> Iterator[pb.Lease]:
        self.calls.append(("acquire", args, kwargs))
        yield a_lease(pb.LEASE_PENDING)
        yield FakeClient.final_lease

    def list_leases(self, **kwargs: Any) -> list[pb.Lease]:
        self.calls.append(("list_leases", (), kwargs))
        return [a_lease(), a_lease(pb.LEASE_RELEASED)]

    def status(self, lease_id: str) -> pb.Lease:
        self.calls.append(("status", (lease_id,), {}))
        return a_lease()

    def list_pools(self) -> list[pb.Pool]:
        return [
            pb.Pool(
                name="shared",
                quota_per_server=4,
                max_servers=2,
                tritonserver="/opt/triton",
                servers=[pb.PoolServer(server_id="s-1")],
            )
        ]

    def create_pool(self, name: str, **kwargs: Any) -> pb.Pool:
        self.calls.append(("create_pool", (name,), kwargs))
        return pb.Pool(name=name)

    def list_names(self) -> list[pb.LeaseName]:
        return [pb.LeaseName(name="adder", lease_id="l-123")]

    def allowlist(self) -> list[str]:
        return ["/opt/a", "/opt/b"]

    final_lease = a_lease()


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> type[FakeClient]:
    # The CLI imports the client when a command first needs it (tms_core/cli/common.py).
    monkeypatch.setattr(api_client, "TmsClient", FakeClient)
    monkeypatch.setenv("TMS_TARGETS_FILE", str(tmp_path / "targets.yaml"))
    FakeClient.made = []
    FakeClient.final_lease = a_lease()
    return FakeClient


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


MODEL = f"name=add_sub,uri={EXAMPLE}"


@pytest.mark.parametrize(
    ("args", "target", "porcelain"),
    [
        (("lease", "list"), "127.0.0.1:30345", False),
        (("-t", "root:1", "lease", "list"), "root:1", False),
        (("lease", "list", "-t", "leaf:2"), "leaf:2", False),
        (("-t", "root:1", "lease", "list", "-t", "leaf:2"), "leaf:2", False),
        (("lease", "-t", "mid:3", "list"), "mid:3", False),
        (("-z", "lease", "list"), "127.0.0.1:30345", True),
        (("lease", "list", "-z"), "127.0.0.1:30345", True),
        (("--porcelain", "--target", "http://h:4", "lease", "list"), "h:4", True),
    ],
)
def test_target_and_porcelain_in_either_position(
    fake: type[FakeClient], args: tuple[str, ...], target: str, porcelain: bool
) -> None:
    code, out, err = run(*args)
    assert code == 0, err
    assert [c.target for c in fake.made] == [target]
    if porcelain:
        assert out.splitlines() == [
            "l-123\tadder\tREADY\tadd_sub\t127.0.0.1:1\t127.0.0.1:2\t2026-11-18T11:06:40.000Z\tshared",
            "l-123\tadder\tRELEASED\tadd_sub\t127.0.0.1:1\t127.0.0.1:2\t-\tshared",
        ]
    else:
        assert "EXPIRES IN" in out


def test_env_target_and_saved_name(fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch) -> None:
    assert run("target", "add", "prod", "10.0.0.5:30345")[0] == 0
    monkeypatch.setenv("TMS_TARGET", "env:5")
    run("lease", "list")
    run("lease", "list", "-t", "prod")
    assert [c.target for c in fake.made] == ["env:5", "10.0.0.5:30345"]


def test_tls_files_from_flags_else_environment_else_the_saved_target(
    fake: type[FakeClient], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("saved-ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("-----BEGIN CERTIFICATE-----\n")
    for env in ("TMS_CA_FILE", "TMS_CERT_FILE", "TMS_KEY_FILE"):
        monkeypatch.delenv(env, raising=False)
    saved = ("target", "add", "prod", "https://h:1", f"--ca={tmp_path / 'saved-ca.pem'}")
    assert run(*saved, f"--cert={tmp_path / 'cert.pem'}", f"--key={tmp_path / 'key.pem'}")[0] == 0
    run("-t", "prod", "lease", "list")
    monkeypatch.setenv("TMS_CA_FILE", "/env/ca.pem")
    run("-t", "prod", "lease", "list")
    run("--ca", "/flag/root-ca.pem", "lease", "list", "-t", "prod", "--ca", "/flag/ca.pem")
    run("lease", "list", "-t", "other:2")
    cas = [c.tls["ca_file"] for c in fake.made]
    assert cas == [str(tmp_path / "saved-ca.pem"), "/env/ca.pem", "/flag/ca.pem", "/env/ca.pem"]
    assert fake.made[0].tls["key_file"] == str(tmp_path / "key.pem")
    assert fake.made[3].tls["cert_file"] is None  # nothing saved for an address


def test_tmsctl_lease_create_prints_only_the_id(fake: type[FakeClient]) -> None:
    code, out, _ = run("lease", "create", "-m", MODEL, "-t", "127.0.0.1:9", "-z")
    assert (code, out) == (0, "l-123\n")
    code, out, _ = run("lease", "create", "-m", MODEL)
    assert (code, out) == (0, "l-123\n")
    code, out, _ = run("-z", "lease", "acquire", "-m", MODEL)
    assert (code, out) == (0, "l-123\n")
    code, out, _ = run("lease", "acquire", "-m", MODEL)
    assert code == 0 and "lease l-123 (adder)" in out and "http      127.0.0.1:1" in out
    code, out, _ = run("lease", "create", "-m", MODEL, "-o", "json")
    assert code == 0 and '"id": "l-123"' in out


def test_a_failed_create_exits_1_with_one_line(fake: type[FakeClient]) -> None:
    fake.final_lease = a_lease(pb.LEASE_FAILED, "model 'add_sub': weights are corrupt")
    code, out, err = run("lease", "create", "-m", MODEL)
    assert (code, out) == (1, "l-123\n")
    assert err == "error: lease l-123 FAILED: model 'add_sub': weights are corrupt\n"
    code, out, err = run("lease", "acquire", "-m", MODEL, "-o", "json")
    assert code == 1 and '"state": "FAILED"' in out
    assert err == "error: lease l-123 FAILED: model 'add_sub': weights are corrupt\n"


def test_acquire_flags_reach_the_client(fake: type[FakeClient], tmp_path: Path) -> None:
    code, _, err = run(
        "lease",
        "acquire",
        "-m",
        MODEL + ",memory=1GiB",
        "--name",
        "adder",
        "--duration",
        "10m",
        "--activity-window",
        "1m",
        "-p",
        "shared",
        "--quota",
        "2",
    )
    assert code == 0, err
    [(_, args, kwargs)] = fake.made[0].calls
    assert args == (
        (ModelRequest("add_sub", EXAMPLE.as_uri(), 1024**3),),
        LeaseOptions(
            name="adder", duration_s=600.0, activity_window_s=60.0, pool="shared", quota=2
        ),
    )
    assert kwargs == {}
    code, _, err = run("lease", "acquire", "-m", MODEL, "--triton-image", "rel/tritonserver")
    assert code == 0, err
    options = fake.made[1].calls[0][1][1]
    assert options.tritonserver == str(Path.cwd() / "rel" / "tritonserver")


def test_spec_file_with_flags_over_it(fake: type[FakeClient], tmp_path: Path) -> None:
    spec = tmp_path / "lease.yaml"
    spec.write_text(
        "models:\n  - {name: add_sub, uri: ./add_sub}\nname: from-file\nduration: 1h\n"
        "activity_window: 5m\n"
    )
    code, _, err = run("lease", "create", "-f", str(spec), "--duration", "2m")
    assert code == 0, err
    [(_, (models, options), _)] = fake.made[0].calls
    assert models == (ModelRequest("add_sub", (tmp_path / "add_sub").as_uri(), 0),)
    assert options.name == "from-file"
    assert (options.duration_s, options.activity_window_s) == (120.0, 300.0)

    code, _, err = run("lease", "create", "-f", str(spec), "-m", MODEL, "--name", "flag")
    assert code == 0, err
    _, (models, options), _ = fake.made[1].calls[0]
    assert models == (ModelRequest("add_sub", EXAMPLE.as_uri(), 0),) and options.name == "flag"

    spec.write_text("models: [{name: a, uri: /a}]\nqouta: 1\n")
    code, _, err = run("lease", "create", "-f", str(spec))
    assert code == 1
    assert err == f"error: {spec}: unknown key 'qouta'; did you mean 'quota'?\n"


def test_porcelain_lists(fake: type[FakeClient]) -> None:
    assert run("-z", "pool", "list")[1] == "shared\t4\t0\t2\t1\t0\t/opt/triton\n"
    assert run("lease", "name", "list", "-z")[1] == "adder\tl-123\t-\t-\t-\n"
    assert run("allowlist", "list", "-z")[1] == "/opt/a\n/opt/b\n"
    assert run("-z", "pool", "create", "p", "--quota", "4", "--max", "2")[1] == "p\n"
    kwargs = fake.made[-1].calls[0][2]
    assert kwargs == {
        "quota_per_server": 4,
        "max_servers": 2,
        "min_servers": 0,
        "server_memory_bytes": 0,
        "tritonserver": "",
    }


def test_json_wins_over_porcelain(fake: type[FakeClient]) -> None:
    code, out, _ = run("-z", "lease", "status", "l-123", "-o", "json")
    assert code == 0 and out.startswith("{") and '"state": "READY"' in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("lease", "create"), "error: no models to lease"),
        (("lease", "create", "--bogus"), "error: No such option '--bogus'."),
        (("pool", "create", "p", "--max", "1"), "error: Missing option '--quota'"),
        (("lease", "create", "-m", "add_sub"), "error: --model #1: 'add_sub': expected"),
        (("lease", "acquire", "-m", MODEL, "--duration", "soon"), "error: --duration: 'soon'"),
        (("pool", "create", "p", "--quota", "1", "--max", "1", "--memory", "x"), "--memory"),
        (("-t", "no-such-name", "lease", "list"), "no saved target named 'no-such-name'"),
    ],
)
def test_mistakes_are_one_line(fake: type[FakeClient], args: tuple[str, ...], message: str) -> None:
    code, out, err = run(*args)
    assert code in (1, 2) and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ") and message in err


def test_usage_errors_exit_2_and_point_at_help(fake: type[FakeClient]) -> None:
    code, _, err = run("lease", "create", "--bogus")
    assert code == 2 and "(see 'cli lease create -h')" in err


def test_placement_flags_reach_the_client(fake: type[FakeClient]) -> None:
    code, _, err = run(
        "lease",
        "acquire",
        "-m",
        MODEL,
        "--gpus",
        "2",
        "--gpu-product",
        "A100",
        "--node-selector",
        "zone=lab",
        "--exclusive",
        "--colocate-with",
        "adder",
        "--avoid",
        "team=b",
        "--label",
        "team=a",
        "--priority",
        "5",
    )
    assert code == 0, err
    [(_, (_, options), _)] = fake.made[0].calls
    assert options.gpus == 2 and options.gpu_product == "A100"
    assert options.node_selector == {"zone": "lab"} and options.exclusive is True
    assert options.colocate_with == ("adder",) and options.avoid == ("team=b",)
    assert options.labels == {"team": "a"} and options.priority == 5
    code, _, err = run("lease", "acquire", "-m", MODEL, "--label", "no-equals")
    assert code == 1 and err == "error: --label: 'no-equals' is not KEY=VALUE\n"


def test_the_acquire_progress_bar_shows_bytes_and_rate_while_downloading() -> None:
    from tms_core.cli.output import DownloadRates

    rates = DownloadRates()
    model = pb.ModelStatus(name="m", state=pb.MODEL_FETCHING, bytes_total=8 * 2**20)
    model.bytes_done = 2**20
    assert rates.describe(model, 10.0) == (1.125, "1.0 MiB / 8.0 MiB")
    model.bytes_done = 5 * 2**20
    assert rates.describe(model, 12.0) == (1.625, "5.0 MiB / 8.0 MiB  2.0 MiB/s")
    model.state = pb.MODEL_LOADING
    assert rates.describe(model, 13.0) == (2.0, "")
