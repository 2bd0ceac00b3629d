"""Settings: defaults, the YAML file, TMS_* variables and explicit values, and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tms_core.config import DEFAULT_LISTEN, load_settings
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
    assert settings.local.idle_grace == 60.0
    assert settings.local.max_servers == 8
    assert settings.local.start_timeout == 60.0
    assert settings.local.tritonserver is None
    assert settings.local.server_memory > 0


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
        "local:\n  idle_grace: 5s\n  server_memory: 2GiB\n  max_servers: 3\n"
        "  tritonserver: /opt/triton/bin/tritonserver\n",
    )
    settings = load_settings(path)
    assert settings.daemon.listen == "0.0.0.0:4000"
    assert settings.daemon.leave_serving is True
    assert settings.lease.default_duration == 600.0
    assert settings.lease.max_duration == 5400.0
    assert settings.local.idle_grace == 5.0
    assert settings.local.server_memory == 2 * GiB
    assert settings.local.max_servers == 3
    assert settings.local.tritonserver == Path("/opt/triton/bin/tritonserver")
    # Values the file leaves out keep their defaults.
    assert settings.local.start_timeout == 60.0


def test_plain_numbers_are_seconds_and_bytes(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, "local:\n  idle_grace: 7\n  server_memory: 1024\n"))
    assert settings.local.idle_grace == 7.0
    assert settings.local.server_memory == 1024


def test_config_file_named_by_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_CONFIG_FILE", str(write(tmp_path, "local:\n  max_servers: 2\n")))
    assert load_settings().local.max_servers == 2


def test_an_empty_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, "")) == load_settings()


def test_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "5s")
    monkeypatch.setenv("TMS_LOCAL__SERVER_MEMORY", "3GiB")
    monkeypatch.setenv("TMS_LEASE__DEFAULT_DURATION", "2m")
    monkeypatch.setenv("TMS_DAEMON__LISTEN", "127.0.0.1:5555")
    settings = load_settings()
    assert settings.local.idle_grace == 5.0
    assert settings.local.server_memory == 3 * GiB
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
    monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "5s")
    monkeypatch.setenv("TMS_TRITONSERVER", "/env/tritonserver")
    path = write(tmp_path, "local:\n  idle_grace: 7s\n  max_servers: 2\n")
    settings = load_settings(
        path, local={"idle_grace": "9s", "tritonserver": Path("/flag/tritonserver")}
    )
    assert settings.local.idle_grace == 9.0
    assert settings.local.tritonserver == Path("/flag/tritonserver")
    assert settings.local.max_servers == 2  # from the file, not overridden


def test_none_overrides_leave_lower_layers_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    # The CLI passes None for every flag the user did not give.
    monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "5s")
    settings = load_settings(local={"idle_grace": None}, daemon={"listen": None})
    assert settings.local.idle_grace == 5.0
    assert settings.daemon.listen == DEFAULT_LISTEN


def test_environment_wins_over_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "5s")
    assert load_settings(write(tmp_path, "local:\n  idle_grace: 7s\n")).local.idle_grace == 5.0


def test_unknown_key_in_file_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "local:\n  idle_grac: 5s\n"))
    assert info.value.message == "local.idle_grac: unknown setting; did you mean 'idle_grace'?"


def test_unknown_section_in_file_suggests_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "locl:\n  idle_grace: 5s\n"))
    assert info.value.message == "locl: unknown setting; did you mean 'local'?"


def test_unknown_key_with_nothing_close(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "lease:\n  zzzzzz: 1\n"))
    assert info.value.message == "lease.zzzzzz: unknown setting"


def test_unknown_environment_variable_in_a_section(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TMS_LOCAL__IDLE_GRAC", "5s")
    with pytest.raises(ConfigError, match=r"local\.idle_grac: .*did you mean 'idle_grace'\?"):
        load_settings()


@pytest.mark.parametrize("source", ["file", "env", "override"])
def test_a_bad_duration_names_the_setting(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError) as info:
        if source == "file":
            load_settings(write(tmp_path, "local:\n  idle_grace: abc\n"))
        elif source == "env":
            monkeypatch.setenv("TMS_LOCAL__IDLE_GRACE", "abc")
            load_settings()
        else:
            load_settings(local={"idle_grace": "abc"})
    message = info.value.message
    assert message.startswith("local.idle_grace: ")
    assert "'abc' is not a duration" in message
    assert "\n" not in message


def test_a_bad_size_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, "local:\n  server_memory: lots\n"))
    assert info.value.message.startswith("local.server_memory: ")
    assert "'lots' is not a size" in info.value.message


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
    with pytest.raises(ConfigError, match=r"^local\.idle_grace: "):
        load_settings(write(tmp_path, "local:\n  idle_grace: -5\n"))
