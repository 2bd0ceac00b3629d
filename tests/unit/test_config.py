"""Settings: defaults, the YAML file, TMS_* variables and explicit values, and their errors."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import pytest

from tms_core.config import (
    DEFAULT_LISTEN,
    LocalSettings,
    ServerSettings,
    Settings,
    load_settings,
)
from tms_core.errors import ConfigError

GiB = 1024**3


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tms.yaml"
    path.write_text(text)
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.daemon.listen == DEFAULT_LISTEN == "127.0.0.1:30345"
    assert settings.daemon.backend == "local"
    assert settings.daemon.leave_serving is False
    assert settings.lease.default_duration == 3600.0
    assert settings.lease.max_duration == 7 * 86400.0
    assert settings.servers.idle_grace == 60.0
    assert settings.servers.max_servers == 8
    assert settings.servers.start_timeout == 60.0
    assert settings.servers.memory > 0
    assert settings.local.tritonserver is None


def test_default_state_path_follows_xdg_state_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert load_settings().daemon.state_path() == tmp_path / "tms" / "state.db"
    explicit = load_settings(daemon={"state": tmp_path / "x.db"})
    assert explicit.daemon.state_path() == tmp_path / "x.db"


def test_file_values_are_parsed(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "daemon:\n  listen: 0.0.0.0:4000\n  leave_serving: true\n"
        "lease:\n  default_duration: 10m\n  max_duration: 1h30m\n"
        "servers:\n  idle_grace: 5s\n  memory: 2GiB\n  max_servers: 3\n"
        "local:\n  tritonserver: /opt/triton/bin/tritonserver\n",
    )
    settings = load_settings(path)
    assert settings.daemon.listen == "0.0.0.0:4000"
    assert settings.daemon.leave_serving is True
    assert settings.lease.default_duration == 600.0
    assert settings.lease.max_duration == 5400.0
    assert settings.servers.idle_grace == 5.0
    assert settings.servers.memory == 2 * GiB
    assert settings.servers.max_servers == 3
    assert settings.local.tritonserver == Path("/opt/triton/bin/tritonserver")
    # Values the file leaves out keep their defaults.
    assert settings.servers.start_timeout == 60.0


def test_plain_numbers_are_seconds_and_bytes(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "servers:\n  idle_grace: 7\n  memory: 1024\n"))
    assert settings.servers.idle_grace == 7.0
    assert settings.servers.memory == 1024


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_CONFIG_FILE", str(write(tmp_path, "servers:\n  max_servers: 2\n")))
    assert load_settings().servers.max_servers == 2


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == load_settings()


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "5s")
    monkeypatch.setenv("TMS_SERVERS__MEMORY", "3GiB")
    monkeypatch.setenv("TMS_LOCAL__NODE_NAME", "gpu-7")
    monkeypatch.setenv("TMS_LEASE__DEFAULT_DURATION", "2m")
    monkeypatch.setenv("TMS_DAEMON__LISTEN", "127.0.0.1:5555")
    settings = load_settings()
    assert settings.servers.idle_grace == 5.0
    assert settings.servers.memory == 3 * GiB
    assert settings.local.node_name == "gpu-7"
    assert settings.lease.default_duration == 120.0
    assert settings.daemon.listen == "127.0.0.1:5555"


def test_tritonserver_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_TRITONSERVER", "/usr/bin/tritonserver")
    assert load_settings().local.tritonserver == Path("/usr/bin/tritonserver")


def test_variables_that_are_not_settings_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # TMS_TARGET is the client's; the daemon's settings must not trip over it.
    monkeypatch.setenv("TMS_TARGET", "127.0.0.1:1")
    assert load_settings().daemon.listen == DEFAULT_LISTEN


def test_explicit_overrides_win(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "5s")
    monkeypatch.setenv("TMS_TRITONSERVER", "/env/tritonserver")
    path = write(tmp_path, "servers:\n  idle_grace: 7s\n  max_servers: 2\n")
    settings = load_settings(
        path, servers={"idle_grace": "9s"}, local={"tritonserver": Path("/flag/tritonserver")}
    )
    assert settings.servers.idle_grace == 9.0
    assert settings.local.tritonserver == Path("/flag/tritonserver")
    assert settings.servers.max_servers == 2  # from the file, not overridden


def test_none_overrides_leave_lower_layers_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI passes None for every flag the user did not give.
    monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "5s")
    settings = load_settings(servers={"idle_grace": None}, daemon={"listen": None})
    assert settings.servers.idle_grace == 5.0
    assert settings.daemon.listen == DEFAULT_LISTEN


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "5s")
    settings = load_settings(write(tmp_path, "servers:\n  idle_grace: 7s\n"))
    assert settings.servers.idle_grace == 5.0


def test_unknown_key_in_file_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "servers:\n  idle_grac: 5s\n"))
    assert info.value.message == "servers.idle_grac: unknown setting; did you mean 'idle_grace'?"


def test_a_misspelt_moved_key_suggests_its_new_name(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "local:\n  idle_grac: 5s\n"))
    message = info.value.message
    assert message == "local.idle_grac: unknown setting; did you mean 'servers.idle_grace'?"


def test_unknown_section_in_file_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "locl:\n  gpus: []\n"))
    assert info.value.message == "locl: unknown setting; did you mean 'local'?"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "server:\n  memory: 1GiB\n"))
    assert info.value.message == "server: unknown setting; did you mean 'servers'?"


def test_unknown_key_with_nothing_close(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "lease:\n  zzzzzz: 1\n"))
    assert info.value.message == "lease.zzzzzz: unknown setting"


def test_unknown_environment_variable_in_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_SERVERS__IDLE_GRAC", "5s")
    with pytest.raises(ConfigError, match=r"servers\.idle_grac: .*did you mean 'idle_grace'\?"):
        load_settings()


@pytest.mark.parametrize("source", ["file", "env", "override"])
def test_a_bad_duration_names_the_setting(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as info:
        if source == "file":
            load_settings(write(tmp_path, "servers:\n  idle_grace: abc\n"))
        elif source == "env":
            monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "abc")
            load_settings()
        else:
            load_settings(servers={"idle_grace": "abc"})
    message = info.value.message
    assert message.startswith("servers.idle_grace: ")
    assert "'abc' is not a duration" in message
    assert "\n" not in message


def test_a_bad_size_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "servers:\n  memory: lots\n"))
    assert info.value.message.startswith("servers.memory: ")
    assert "'lots' is not a size" in info.value.message


def test_more_triton_arguments_are_read(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            "servers:\n  triton_args:\n    - --disable-auto-complete-config\n"
            "    - --backend-config=python,shm-default-byte-size=1048576\n",
        )
    )
    assert settings.servers.triton_args == [
        "--disable-auto-complete-config",
        "--backend-config=python,shm-default-byte-size=1048576",
    ]
    assert ServerSettings().triton_args == []


@pytest.mark.parametrize(
    ("arg", "said"),
    [
        ("--grpc-port=9000", "[1] '--grpc-port=9000': TMS sets --grpc-port itself"),
        ("--model-repository=/x", "TMS sets --model-repository itself"),
        ("--model-control-mode", "TMS sets --model-control-mode itself"),
        ("--log-verbose 1", "[1] '--log-verbose 1': expected one argument, --name or --name=value"),
        ("log-verbose=1", "expected one argument"),
        ("--", "expected one argument"),
    ],
)
def test_triton_arguments_tms_sets_or_that_are_not_one_argument_are_refused(
    tmp_path: Path, arg: str, said: str
) -> None:
    text = f"servers:\n  triton_args: ['--log-info=true', '{arg}']\n"
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, text))
    assert info.value.message.startswith("servers.triton_args: ")
    assert said in info.value.message
    assert "Value error" not in info.value.message


def test_a_bad_backend_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^daemon\.backend: .*'local' or 'kubernetes'"):
        load_settings(write(tmp_path, "daemon:\n  backend: nomad\n"))


def test_kubernetes_settings_are_read_and_checked(tmp_path: Path) -> None:
    settings = load_settings(
        write(
            tmp_path,
            "daemon:\n  backend: kubernetes\nkubernetes:\n  namespace: inference\n"
            "  labels: {team: vision}\n  request_timeout: 5s\n",
        )
    )
    assert settings.daemon.backend == "kubernetes"
    assert settings.kubernetes.namespace == "inference"
    assert settings.kubernetes.labels == {"team": "vision"}
    assert settings.kubernetes.request_timeout == 5.0
    with pytest.raises(ConfigError, match=r"^kubernetes\.image_pull_policy: "):
        load_settings(write(tmp_path, "kubernetes:\n  image_pull_policy: Sometimes\n"))


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_a_file_that_is_not_a_mapping_is_refused(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.message == f"config file {path}: expected a mapping of sections"


def test_a_section_that_is_not_a_mapping_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^local: "):
        load_settings(write(tmp_path, "local: 5\n"))


def test_invalid_yaml_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "local: [\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.message.startswith(f"config file {path}: not valid YAML")


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.message == f"config file {path}: No such file or directory"


def test_a_negative_numeric_duration_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^servers\.idle_grace: "):
        load_settings(write(tmp_path, "servers:\n  idle_grace: -5\n"))


# --------------------------------------------- keys that moved from local.* to servers.*

# (old key under local, new key under servers, a value as text, what it parses to)
MOVED = [
    ("idle_grace", "idle_grace", "7s", 7.0),
    ("start_timeout", "start_timeout", "2m", 120.0),
    ("server_memory", "memory", "2GiB", 2 * GiB),
    ("max_servers", "max_servers", "3", 3),
]


def deprecations(caught: list[warnings.WarningMessage]) -> list[str]:
    return [
        str(w.message)
        for w in caught
        if issubclass(w.category, DeprecationWarning) and "is deprecated; use" in str(w.message)
    ]


def logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "tms_core.config" and r.levelno == logging.WARNING
    ]


def test_the_moved_keys_are_gone_from_local() -> None:
    for old, new, _, _ in MOVED:
        assert old not in LocalSettings.model_fields
        assert new in ServerSettings.model_fields


@pytest.mark.parametrize("source", ["file", "env", "override"])
@pytest.mark.parametrize(("old", "new", "text", "value"), MOVED)
def test_an_old_key_still_sets_its_new_key_with_a_warning(
    source: str,
    old: str,
    new: str,
    text: str,
    value: float,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert getattr(ServerSettings(), new) != value  # not the default, so the key did it
    path = write(tmp_path, f"local:\n  {old}: {text}\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source == "file":
            settings = load_settings(path)
        elif source == "env":
            monkeypatch.setenv(f"TMS_LOCAL__{old.upper()}", text)
            settings = load_settings()
        else:
            settings = load_settings(local={old: text})
    assert getattr(settings.servers, new) == value
    prefix = f"config file {path}: " if source == "file" else ""
    expected = (
        f"{prefix}local.{old} is deprecated; use servers.{new} (in the environment:"
        f" TMS_SERVERS__{new.upper()}, not TMS_LOCAL__{old.upper()})"
    )
    # Once each, though load_settings validates twice (the environment, then all layers).
    assert deprecations(caught) == [expected]
    assert logged(caplog) == [expected]


@pytest.mark.parametrize("source", ["file", "env", "override"])
def test_with_the_old_and_the_new_key_the_new_one_wins(
    source: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    path = write(tmp_path, "local:\n  server_memory: 2GiB\nservers:\n  memory: 3GiB\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if source == "file":
            settings = load_settings(path)
        elif source == "env":
            monkeypatch.setenv("TMS_LOCAL__SERVER_MEMORY", "2GiB")
            monkeypatch.setenv("TMS_SERVERS__MEMORY", "3GiB")
            settings = load_settings()
        else:
            settings = load_settings(local={"server_memory": "2GiB"}, servers={"memory": "3GiB"})
    assert settings.servers.memory == 3 * GiB
    [message] = deprecations(caught)
    assert "local.server_memory is deprecated; use servers.memory" in message
    assert message.endswith(
        "; both are given, so servers.memory is used and local.server_memory ignored"
    )
    assert logged(caplog) == [message]


def test_across_sources_the_usual_order_holds_for_old_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        # An old key in a higher layer beats a new key in a lower one...
        monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "5s")
        new_in_file = write(tmp_path, "servers:\n  idle_grace: 7s\n")
        assert load_settings(new_in_file).servers.idle_grace == 5.0
        assert load_settings(new_in_file, local={"idle_grace": "9s"}).servers.idle_grace == 9.0
        # ...and a new key in a higher layer beats an old key in a lower one.
        monkeypatch.delenv("TMS_LOCAL__IDLE_GRACE")
        monkeypatch.setenv("TMS_SERVERS__IDLE_GRACE", "5s")
        old_in_file = write(tmp_path, "local:\n  idle_grace: 7s\n")
        assert load_settings(old_in_file).servers.idle_grace == 5.0
        assert load_settings(old_in_file, servers={"idle_grace": "9s"}).servers.idle_grace == 9.0


def test_an_old_key_given_to_settings_directly_moves_too() -> None:
    # As tests/kubernetes/test_manifests.py builds the ConfigMap's settings.
    with pytest.warns(DeprecationWarning, match=r"local\.max_servers is deprecated"):
        settings = Settings(local={"max_servers": 2, "node_name": "n1"})
    assert settings.servers.max_servers == 2
    assert settings.local.node_name == "n1"


def test_an_old_key_with_a_bad_value_names_the_new_key(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "local:\n  server_memory: lots\n"))
    assert info.value.message.startswith("servers.memory: ")


def test_unknown_keys_beside_old_ones_are_still_refused(tmp_path: Path) -> None:
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "local:\n  idle_grace: 5s\n  zzzzzz: 1\n"))
    assert info.value.message == "local.zzzzzz: unknown setting"
