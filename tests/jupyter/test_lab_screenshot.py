"""The dashboard in JupyterLab, in headless Chromium driven by Playwright: live widgets
rendered by a real kernel against a real daemon, saved as a screenshot."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from tests.conftest import EXAMPLES, Daemon, wait_for
from tests.jupyter.conftest import KERNEL_NAME, artifacts_dir
from tms_core.api import tms_pb2 as pb
from tms_core.backends.local import free_ports
from tms_core.lease_request import LeaseOptions, ModelRequest

pytestmark = pytest.mark.triton

GiB = 1024**3
# Headless on a machine with no network and no display (see docs/jupyter.md).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def renamed_add_sub(root: Path, name: str) -> Path:
    """A copy of the add_sub example under another model name."""
    model = root / name
    shutil.copytree(EXAMPLES / "add_sub", model)
    config = model / "config.pbtxt"
    config.write_text(config.read_text().replace('name: "add_sub"', f'name: "{name}"'))
    return model


def find_chromium() -> str | None:
    explicit = os.environ.get("TMS_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


class Lab:
    """`jupyter lab` on a free port, no token, its settings and state in `home`."""

    def __init__(self, root: Path, home: Path) -> None:
        self.port = free_ports(1)[0]
        self.url = f"http://127.0.0.1:{self.port}"
        settings = home / "lab-settings" / "@jupyterlab" / "apputils-extension"
        settings.mkdir(parents=True)
        # No "news?" toast and no update check: the machine has no network.
        (settings / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        env = dict(os.environ)
        env["JUPYTERLAB_SETTINGS_DIR"] = str(home / "lab-settings")
        env["JUPYTERLAB_WORKSPACES_DIR"] = str(home / "lab-workspaces")
        self.log = open(home / "jupyter-lab.log", "wb")  # closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "jupyterlab",
                "--no-browser",
                "--allow-root",
                "--ip=127.0.0.1",
                f"--port={self.port}",
                "--IdentityProvider.token=",
                "--ServerApp.password=",
                "--ServerApp.disable_check_xsrf=True",
                f"--ServerApp.root_dir={root}",
                "--LabApp.news_url=",
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        def up() -> bool:
            assert self.proc.poll() is None, "jupyter lab exited; see jupyter-lab.log"
            try:
                _get(f"{self.url}/api/status")
            except OSError:
                return False
            return True

        wait_for(up, timeout=timeout, what="jupyter lab to answer")

    def kernels(self) -> list[dict[str, object]]:
        """The running kernels; none yet while one is starting. Jupyter Server 2.21 answers
        500 to a listing that comes in the moment a kernel starts (its `last_activity` is
        not set yet: TraitError in `kernel_model`), so that answer means one is starting."""
        try:
            return _get(f"{self.url}/api/kernels")  # type: ignore[return-value]
        except urllib.error.HTTPError as exc:
            if exc.code != 500:
                raise
            return []

    def stop(self) -> None:
        for kernel in self.kernels() if self.proc.poll() is None else []:
            request = urllib.request.Request(
                f"{self.url}/api/kernels/{kernel['id']}", method="DELETE"
            )
            urllib.request.urlopen(request, timeout=10).close()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; checked first, so a machine without it skips at once."""
    found = find_chromium()
    if found is None and os.environ.get("TMS_REQUIRE_CHROMIUM"):
        pytest.fail("chromium not found, and TMS_REQUIRE_CHROMIUM is set (as .ci/run sets it)")
    if found is None:
        pytest.skip(
            "chromium not found: apt-get install chromium (or set TMS_CHROMIUM); "
            ".ci/run installs it"
        )
    assert found is not None
    return found


@pytest.fixture
def lab(chromium: str, tmp_path: Path, jupyter_env: Path, daemon_for_lab: Daemon) -> Iterator[Lab]:
    root = tmp_path / "notebooks"
    root.mkdir()
    nb = new_notebook(
        cells=[
            new_code_cell("%load_ext tms_console"),
            new_code_cell("%tms dashboard"),
            new_code_cell("%tms infer-widget ranker"),
        ]
    )
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "Python 3",
        "language": "python",
    }
    nbformat.write(nb, root / "dashboard.ipynb")
    server = Lab(root, tmp_path)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


@pytest.fixture
def daemon_for_lab(
    make_daemon: Callable[..., Daemon], monkeypatch: pytest.MonkeyPatch
) -> Iterator[Daemon]:
    daemon = make_daemon("--gpus=2x16GiB", "--idle-grace=1s")
    monkeypatch.setenv("TMS_TARGET", daemon.target)
    yield daemon


def test_dashboard_renders_in_jupyterlab(
    chromium: str, lab: Lab, daemon_for_lab: Daemon, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    daemon = daemon_for_lab
    # Three models (add_sub under other names) that fill two 16 GiB GPUs unevenly.
    leases = []
    for name, memory in (("ranker", 9 * GiB), ("embedder", 5 * GiB), ("summarizer", 4 * GiB)):
        model = renamed_add_sub(tmp_path / "models", name)
        final = list(
            daemon.client.acquire(
                [ModelRequest(name, model.as_uri(), memory)],
                LeaseOptions(name=name, duration_s=1800),
            )
        )[-1]
        assert final.state == pb.LEASE_READY, final.reason
        leases.append(final)
    by_gpu: dict[int, int] = {}
    for lease in leases:
        by_gpu[lease.server_gpus[0]] = (
            by_gpu.get(lease.server_gpus[0], 0) + lease.models[0].memory_bytes
        )

    shot = artifacts_dir() / "jupyter-dashboard.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a new, empty --user-data-dir
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1500, "height": 1000},
        )
        try:
            page = browser.new_page()
            page.goto(f"{lab.url}/lab/tree/dashboard.ipynb", timeout=60_000)
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            wait_for(
                lambda: any(k.get("execution_state") == "idle" for k in lab.kernels()),
                timeout=60,
                what="the notebook's kernel to start",
            )
            page.locator(".jp-Cell").first.click()
            for _ in range(2):
                page.keyboard.press("Shift+Enter")
            dashboard = page.locator(".tms-dashboard")
            dashboard.wait_for(timeout=60_000)
            page.wait_for_function(
                "document.querySelectorAll('.tms-dashboard .tms-leases tbody tr').length === 3",
                timeout=30_000,
            )
            # The bars: one per declared GPU, filled in proportion to what leases declare.
            assert page.locator(".tms-slot").count() == 2
            widths = page.eval_on_selector_all(
                ".tms-slot .progress-bar", "bars => bars.map(b => b.style.width)"
            )
            table = page.locator(".tms-dashboard table.tms-leases").inner_text()
            for lease in leases:
                assert lease.id in table and lease.name in table
            page.mouse.move(0, 0)
            page.locator(".jp-Notebook").evaluate("n => n.scrollTo(0, 0)")
            dashboard.screenshot(path=str(shot))

            # Live: a lease released elsewhere leaves the table in the browser by itself.
            daemon.client.release(leases[-1].id, wait=False)
            page.wait_for_function(
                "document.querySelectorAll('.tms-dashboard .tms-leases tbody tr').length === 2",
                timeout=30_000,
            )
            assert leases[-1].id not in page.locator(".tms-dashboard .tms-leases").inner_text()

            # The inference form, typed into and sent from the browser.
            page.keyboard.press("Shift+Enter")
            form = page.locator(".tms-infer-widget")
            form.wait_for(timeout=30_000)
            boxes = page.locator(".tms-infer-widget .tms-input input")
            boxes.first.wait_for(timeout=30_000)
            assert boxes.count() == 2
            boxes.nth(0).fill("1, 2, 3, 4")
            boxes.nth(1).fill("[10, 10, 10, 10]")
            page.locator(".tms-infer-widget button", has_text="Send").click()
            page.locator(".tms-infer-widget table.tms-infer").wait_for(timeout=30_000)
            answer = page.locator(".tms-infer-widget table.tms-infer").inner_text()
            assert "OUTPUT0" in answer and "[11., 12., 13., 14.]" in answer, answer
            assert page.locator(".tms-infer-widget").inner_text().count(" ms") >= 1
            form.screenshot(path=str(artifacts_dir() / "jupyter-infer.png"))
        finally:
            browser.close()
    # Each GPU's declared bar (every other bar) is what its leases declare over 16 GiB.
    declared = [float(width.rstrip("%")) for width in widths[0::2]]
    assert declared == [100 * by_gpu.get(gpu, 0) / (16 * GiB) for gpu in (0, 1)], widths
    assert shot.stat().st_size > 10_000
    for lease in leases[:-1]:
        daemon.client.release(lease.id)
