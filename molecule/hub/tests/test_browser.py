"""The hub in a real headless browser: Debian's Chromium driven by selenium through chromedriver, from the
controller, as a user meets it: the login form, the spawn, JupyterLab's UI, a notebook cell and its output.

The browser reaches the proxy at the container's address on the Docker bridge (the hub listens on 0.0.0.0).
The role's certificate is self-signed for localhost and 127.0.0.1, so Chromium accepts that one certificate
by its public key's hash (--ignore-certificate-errors-spki-list) and no other. The screenshot of the
notebook with its output is kept at reports/hub/hub-browser.png (git-ignored; Molecule's destroy prunes its
ephemeral directory; the test prints the path, and writes it on failure too).
"""

import base64
import hashlib
import shutil
import subprocess
import tempfile

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait
from test_hub import ARTIFACTS, client

CONTAINER = "hub-debian12"
USER = "alice"
PASSWORD = "hub-test-password"
CELL = 'import os, sys; print("cell ran as", os.getuid(), sys.executable)'
SCREENSHOT = ARTIFACTS / "hub-browser.png"
# Spawning waits for the hub's start (600 s here, under load); the other waits are for the UI and the kernel.
SPAWN_WAIT = 660
UI_WAIT = 180


def container_address() -> str:
    return subprocess.check_output(
        ["docker", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", CONTAINER],
        text=True,
    ).strip()


def spki_hash(host) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the role's certificate: what Chromium's SPKI list takes."""
    with host.sudo():
        der = host.check_output(
            "openssl x509 -in /etc/jupyter/tls/jupyter.crt -pubkey -noout | openssl pkey -pubin -outform der"
            " | base64 -w0"
        )
    return base64.b64encode(hashlib.sha256(base64.b64decode(der)).digest()).decode()


@pytest.fixture
def browser(host):
    for binary in ("chromium", "chromedriver"):
        assert shutil.which(binary), f"{binary} is missing: make setup installs chromium and chromium-driver"
    profile = tempfile.mkdtemp(prefix="hub-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    # As root, in a closed network: no sandbox, no GPU, none of Chromium's own background connections.
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={spki_hash(host)}",
    ):
        options.add_argument(flag)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        yield driver
    finally:
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(SCREENSHOT))
        print(f"browser screenshot: {SCREENSHOT} (at {driver.current_url})")
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.mark.timeout(SPAWN_WAIT + 3 * UI_WAIT + 300)
def test_a_user_logs_in_spawns_and_runs_a_notebook_cell_in_a_browser(host, browser):
    client(host, "stop", USER)  # the browser itself must start her server
    with host.sudo():
        host.run(f"rm -f ~{USER}/Untitled*.ipynb")
    base = f"https://{container_address()}:8888/"
    browser.get(base + "hub/login")
    assert "JupyterHub" in browser.title, browser.title
    browser.find_element(By.ID, "username_input").send_keys(USER)
    browser.find_element(By.ID, "password_input").send_keys(PASSWORD)
    browser.find_element(By.ID, "login_submit").click()

    # The hub spawns her server (a progress page) and sends the browser on to JupyterLab (default_url).
    WebDriverWait(browser, SPAWN_WAIT).until(ec.url_contains(f"/user/{USER}/lab"))
    # A fresh workspace (?reset): JupyterLab would reopen an earlier run's notebook instead of the launcher.
    browser.get(base + f"user/{USER}/lab?reset")
    launcher = WebDriverWait(browser, UI_WAIT).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, '.jp-LauncherCard[data-category="Notebook"]'))
    )
    assert "Python (lab environment)" in launcher.get_attribute("title") + launcher.text
    launcher.click()

    # A new notebook on the lab kernel: type the cell and run it (Shift+Enter); it runs once the kernel is up.
    editor = WebDriverWait(browser, UI_WAIT).until(
        ec.element_to_be_clickable((By.CSS_SELECTOR, ".jp-NotebookPanel .jp-Cell .cm-content"))
    )
    editor.click()
    editor.send_keys(CELL)
    editor.send_keys(Keys.SHIFT, Keys.ENTER)

    def cell_output(driver) -> str | None:
        outputs = driver.find_elements(By.CSS_SELECTOR, ".jp-OutputArea-output")
        return next((e.text for e in outputs if "cell ran as" in e.text), None)

    output = WebDriverWait(browser, UI_WAIT).until(cell_output)
    uid = host.user(USER).uid
    assert output.split() == ["cell", "ran", "as", str(uid), "/opt/llmlab/env/bin/python"], output
