"""The web console in a real headless Chromium (Debian's ``chromium``, driven by
Playwright) against ``procella serve`` on which the real CLI just ran ``pulumi up`` twice,
with a secret, and once more with a program that fails.

The CLI runs with ``PULUMI_CONSOLE_DOMAIN`` set to the server's host:port, so it prints
``View Live: http://127.0.0.1:<port>/<org>/<project>/<stack>/updates/<n>`` (the scheme is the
backend URL's): the browser follows those very links. One server (or, with
PROCELLA_E2E_TOPOLOGY=cluster, three replicas behind Caddy) and one browser serve every test
of the module (CI time), on the journaling mode only: the console reads what the services
give it, whatever the CLI's checkpoint mode. Screenshots go to
``$PROCELLA_CONSOLE_SCREENSHOTS`` when it is set (``docs/console/`` was made that way).
"""

from __future__ import annotations

import os
import pty
import re
import secrets
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import CLUSTER, make_cluster
from names import Names

from procella_testing.cluster import Cluster
from procella_testing.procella_server import ProcellaServer
from procella_testing.processes import expect_fail, poll
from procella_testing.pulumi_cli import PulumiCLI, Stack, make_project

CHROMIUM = os.environ.get("PROCELLA_E2E_CHROMIUM", "/usr/bin/chromium")
SCREENSHOTS = os.environ.get("PROCELLA_CONSOLE_SCREENSHOTS", "")
_VIEW_LIVE = re.compile(r"View Live: (\S+)")

# With the default CLI pin only (e2e/conftest.py collects this module for it alone).
pytestmark = pytest.mark.xdist_group("console")  # one server and one browser for the module


@dataclass
class Deployed:
    server: ProcellaServer | Cluster
    cli: PulumiCLI
    stack: Stack
    links: list[str]  # View Live links: the two successful updates, a preview, the failure
    org: str
    project_dir: Path
    tmp: Path


def view_live(output: str) -> str:
    found = _VIEW_LIVE.findall(output)
    assert found, f"the CLI printed no View Live link:\n{output}"
    return str(found[-1])


def start_server(request: pytest.FixtureRequest, tmp: Path) -> ProcellaServer | Cluster:
    """`procella serve`, or with PROCELLA_E2E_TOPOLOGY=cluster (or containers) three replicas
    behind Caddy (round robin: the pages, the session and the live feed come from any
    replica)."""
    server: ProcellaServer | Cluster
    if CLUSTER:
        server = make_cluster(request, tmp / "cluster", "journal")
    else:
        server = ProcellaServer(tmp / "data", mode="journal")
    request.addfinalizer(server.stop)
    server.start()
    return server


@pytest.fixture(scope="module")
def deployed(
    request: pytest.FixtureRequest, toolchain: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployed]:
    tmp = tmp_path_factory.mktemp("console")
    server = start_server(request, tmp)
    names = Names(org=f"e2e-{secrets.token_hex(4)}", project="web")
    cli = PulumiCLI(
        toolchain,
        tmp / "pulumi-home",
        backend_url=server.url,
        token=server.admin_token,
        cwd=tmp,
        extra_env={"PULUMI_CONSOLE_DOMAIN": f"127.0.0.1:{server.port}"},
    )
    request.addfinalizer(cli.close)
    cli.login()
    project_dir = make_project("things", names.project, tmp)
    stack = Stack(cli, names.stack("dev"), project_dir).init()
    stack.ok("config", "set", "--secret", "secret", "s3cr3t-config")
    links = [view_live(stack.ok("up", "--yes", "--skip-preview").output)]
    stack.ok("config", "set", "generation", "2")
    links.append(view_live(stack.ok("up", "--yes", "--skip-preview").output))
    links.append(view_live(stack.ok("preview").output))
    stack.ok("config", "set", "generation", "not-a-number")
    failed = expect_fail(stack.run("up", "--yes", "--skip-preview"))
    links.append(view_live(failed.output))
    yield Deployed(server, cli, stack, links, names.org, project_dir, tmp)


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def shot(page: Any, name: str) -> None:
    if SCREENSHOTS:
        Path(SCREENSHOTS).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(SCREENSHOTS) / f"{name}.png"), full_page=True)


def log_in(chromium: Any, deployed: Deployed, token: str, target: str) -> Any:
    """A fresh browser context: open ``target``, get the login page, log in, land there."""
    page = chromium.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(target)
    assert "/login" in page.url
    page.fill("input[name=token]", token)
    shot(page, "login")
    page.click("button[type=submit]")
    page.wait_for_url(target)
    return page


def test_the_cli_links_lead_to_the_update_its_events_and_resources(
    chromium: Any, deployed: Deployed
) -> None:
    first, second, preview, failed = deployed.links
    stack_path = f"/{deployed.stack.name}"
    assert first == f"{deployed.server.url}{stack_path}/updates/1"
    assert second.endswith(f"{stack_path}/updates/2") and failed.endswith("/updates/3")
    # `pulumi stack ls` has the stack page as its URL column.
    listed = deployed.stack.cli.json("stack", "ls", "--json", cwd=deployed.project_dir)
    urls = [entry.get("url") for entry in listed if entry["name"].endswith("/dev")]
    assert urls == [f"{deployed.server.url}{stack_path}"], listed
    page = log_in(chromium, deployed, deployed.server.admin_token, second)
    events = page.inner_text("#events")
    assert "+- pulumi-python:dynamic:Resource bravo replaced" in events
    assert "~  pulumi-python:dynamic:Resource alpha updated" in events
    assert "-  pulumi-python:dynamic:Resource charlie deleted" in events
    assert "hush-hush" not in page.content()  # secret outputs stay masked in events
    assert "1 updated" in page.inner_text("main") and "1 replaced" in page.inner_text("main")
    shot(page, "update")
    assert re.fullmatch(rf"{deployed.server.url}{stack_path}/previews/[0-9a-f]{{32}}", preview)
    page.goto(preview)
    assert "Previewing update" in page.inner_text("main")
    assert "succeeded" in page.inner_text("#status")
    page.goto(failed)
    assert "failed" in page.inner_text("#status")
    assert "error:" in page.inner_text(".diagnostics")
    shot(page, "update-failed")
    page.click(f"a[href='{stack_path}']")
    page.wait_for_url(f"**{stack_path}")
    resources = page.inner_text("table.resources")
    for name in ("alpha", "bravo", "group", "group-one", "guarded"):
        assert name in resources
    assert "charlie" not in resources and "protected" in resources
    assert "[secret]" in page.inner_text("table.outputs")
    assert "[secret]" in page.inner_text("table.config")  # the secret config key
    page.click("form.inline button.reveal")  # the first secret output: config_secret
    assert "s3cr3t-config" in page.inner_text("code.revealed")
    shot(page, "stack")
    page.click("table.resources a:text-is('guarded')")
    assert "Protected" in page.inner_text("table.props") and "yes" in page.inner_text("table.props")
    shot(page, "resource")
    page.goto(f"{deployed.server.url}{stack_path}/diff?from=1&to=2")
    assert "charlie" in page.inner_text("main") and "bravo" in page.inner_text("main")
    shot(page, "diff")
    page.goto(f"{deployed.server.url}/{deployed.org}")
    assert "dev" in page.inner_text("table.stacks") and "failed" in page.inner_text("table.stacks")
    shot(page, "org")
    page.goto(f"{deployed.server.url}/account/tokens")
    page.fill("input[name=name]", "laptop")
    page.click("form.create-token button")
    assert page.inner_text("#new-token").startswith("pul-")
    shot(page, "tokens")
    page.close()


def test_a_viewer_cannot_reveal_a_secret(chromium: Any, deployed: Deployed) -> None:
    token = deployed.server.create_token(deployed.org, "viewer", "vivian")
    target = f"{deployed.server.url}/{deployed.stack.name}"
    page = log_in(chromium, deployed, token, target)
    assert "[secret]" in page.inner_text("table.outputs")
    assert page.locator("button.reveal").count() == 0
    # Even a hand-made form post (with the right CSRF token) is refused.
    csrf = page.locator("input[name=csrf]").first.get_attribute("value")
    status = page.evaluate(
        """async ([url, csrf]) => (await fetch(url, {method: 'POST',
             body: new URLSearchParams({csrf, name: 'config_secret'})})).status""",
        [f"{target}/outputs/reveal", csrf],
    )
    assert status == 403
    assert "s3cr3t" not in page.content()
    page.close()


def test_a_running_update_updates_live(chromium: Any, deployed: Deployed) -> None:
    release = deployed.tmp / "release"
    live = Stack(deployed.cli, f"{deployed.org}/web/live", deployed.project_dir).init()
    live.ok("config", "set", "scenario", "slow")
    live.ok("config", "set", "wait_file", str(release))
    run = live.start_up()
    marker = release.with_name(release.name + ".started")
    poll(marker.exists, timeout=120, message="the update reached `slow`")
    target = f"{deployed.server.url}/{live.name}/updates/1"
    page = log_in(chromium, deployed, deployed.server.admin_token, target)
    assert "running" in page.inner_text("#status")
    page.wait_for_selector("#events :text('slow creating')", timeout=20_000)
    shot(page, "update-live")
    release.touch()
    # The page polls, sees the end and reloads itself with the summary.
    page.wait_for_selector("#status:text('succeeded')", timeout=120_000)
    assert "slow created" in page.inner_text("#events")
    assert run.wait(120).rc == 0
    page.close()


def test_pulumi_login_in_the_browser(chromium: Any, deployed: Deployed, tmp_path: Path) -> None:
    """`pulumi login` in a terminal, <ENTER> for the browser: the CLI opens /cli-login (here a
    fake xdg-open hands the URL to Chromium), the user logs in to the console and confirms,
    and the CLI receives a new token of theirs."""
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    opened = tmp_path / "opened-url"
    xdg_open = fake_bin / "xdg-open"
    xdg_open.write_text(f'#!/bin/sh\nprintf "%s" "$1" > {opened}\n')
    xdg_open.chmod(0o755)
    cli = deployed.cli.with_token(None, tmp_path / "home")  # type: ignore[arg-type]
    env = {**cli.env, "PATH": f"{fake_bin}{os.pathsep}{cli.env['PATH']}", "TERM": "xterm"}
    with Terminal([cli.executable, "login", deployed.server.url], env, tmp_path) as terminal:
        prompt = terminal.wait_for("/user/settings/tokens")
        assert f"paste an access token from {deployed.server.url}/user/settings/tokens" in prompt
        terminal.write("\r")
        url = terminal.wait_until(lambda: opened.exists() and opened.read_text(), "xdg-open")
        assert url.startswith(f"{deployed.server.url}/cli-login?") and "cliSessionNonce=" in url
        page = chromium.new_context().new_page()
        page.goto(url)
        page.fill("input[name=token]", deployed.server.admin_token)
        page.click("button[type=submit]")
        page.wait_for_url("**/cli-login?**")
        page.click("form.cli-login button")
        page.wait_for_url("**/welcome/cli")
        assert "logged in" in page.inner_text("h1")
        shot(page, "cli-login-done")
        output = terminal.wait_for("Logged in to")
        assert "as admin" in output
        assert terminal.wait() == 0
        page.close()
    assert cli.ok("whoami").stdout.strip() == "admin"


class Terminal:
    """A command on a pseudo-terminal, so the CLI believes a person is at the keyboard."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.args, self.env, self.cwd = args, env, cwd
        self.output = b""

    def __enter__(self) -> Terminal:
        master, slave = pty.openpty()
        self.master = master
        self.process = subprocess.Popen(
            self.args,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=self.env,
            cwd=self.cwd,
            start_new_session=True,
        )
        os.close(slave)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self.master)

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if ready:
            try:
                self.output += os.read(self.master, 65536)
            except OSError:  # the command exited and closed the terminal
                time.sleep(timeout)

    def wait_until(self, condition: Callable[[], Any], what: str, timeout: float = 60) -> Any:
        """Read the terminal (so the command never blocks on it) until ``condition()``."""
        deadline = time.monotonic() + timeout
        while not (found := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what} after {timeout} s:\n{self.output.decode()}")
            self._read(0.2)
        return found

    def wait_for(self, text: str, timeout: float = 60) -> str:
        self.wait_until(lambda: text.encode() in self.output, repr(text), timeout)
        return self.output.decode(errors="replace")

    def write(self, text: str) -> None:
        os.write(self.master, text.encode())

    def wait(self, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            self._read(0.2)
        return self.process.wait(1)
