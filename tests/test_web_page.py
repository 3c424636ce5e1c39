"""The web page in headless Chromium (Playwright, the system's /usr/bin/chromium) against a real uvicorn server on a
free port, in a thread, serving the simulated cell (real MuJoCo, paced at 2x real time) with the stand-in
grounding of tests/fake_grounding.py and the scripted expert as controller (for speed; its job JSON says so).

As a user would: type a command and see the job succeed; press Escape mid-pick and see the arm halt; resolve an
ambiguous command by clicking the object in the live stream. Screenshots go to the test's tmp directory.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fake_grounding import TEST_TOKEN, stand_in_app
from live_server import running

from pipeline.jobs.sim_cell import SimCell
from pipeline.jobs.sim_config import SimCellConfig

pytestmark = [pytest.mark.slow, pytest.mark.render]
playwright_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


SERVED_APPS: list[Any] = []  # the app the module's server runs, for what only the process can see


def stop_guard_served(url: str) -> int:
    """Stops the running server's stop guard has carried out."""
    lanes = SERVED_APPS[-1].state.stop_guards
    assert lanes, f"the server at {url} runs no stop guard"
    return int(lanes[0].carried_out)


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, SimCell]]:
    import torch

    torch.set_num_threads(1)
    cell = SimCell(SimCellConfig(seed=3, pace=2.0, names=("red ball", "green can", "blue cube")))
    try:
        app = stand_in_app(cell, stop_port=0)  # with a stop guard, as `sam2grasp serve` runs
        SERVED_APPS.append(app)
        with running(app) as port:
            yield f"http://127.0.0.1:{port}", cell
    finally:
        cell.close()


@pytest.fixture(scope="module")
def page(server: tuple[str, SimCell]) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium")
    url, _ = server
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        pg = browser.new_page(viewport={"width": 1200, "height": 1000})
        pg.goto(url + "/", wait_until="domcontentloaded")
        pg.get_by_label("API token").fill(TEST_TOKEN)
        yield pg
        browser.close()


def newest_job(url: str) -> dict[str, Any]:
    jobs: list[dict[str, Any]] = httpx.get(url + "/jobs").json()["jobs"]
    return jobs[0]


def submit(pg: Any, command: str) -> None:
    box = pg.get_by_label("What to pick")
    box.fill(command)
    box.press("Enter")


def test_page_is_labelled_and_a_typed_command_succeeds(page: Any, server: tuple[str, SimCell], tmp_path: Path) -> None:
    url, _ = server
    for control in ("API token", "What to pick", "Controller", "Sequence document (YAML)"):
        assert page.get_by_label(control).count() == 1
    stop = page.get_by_role("button", name="STOP")
    assert stop.get_attribute("aria-keyshortcuts") == "Escape"
    stop.focus()
    assert page.evaluate("document.activeElement.id") == "stop"  # reachable by keyboard
    submit(page, "pick the red ball")
    page.wait_for_selector("#jobs li[data-state=succeeded]", timeout=90_000)
    job = newest_job(url)
    assert job["state"] == "succeeded"
    assert job["target"]["instance"] == "red_ball_0"
    assert "expert" in job["controller"]
    assert "succeeded" in page.locator("#jobs li").first.inner_text()
    page.wait_for_function("document.getElementById('status-camera').textContent.startsWith('streaming')")
    page.screenshot(path=str(tmp_path / "succeeded.png"))


def test_escape_halts_the_arm_mid_pick(page: Any, server: tuple[str, SimCell], tmp_path: Path) -> None:
    url, _ = server
    submit(page, "pick the green can")
    page.wait_for_selector("#jobs li[data-state=tracking], #jobs li[data-state=grasping]", timeout=30_000)
    time.sleep(0.3)
    lane = httpx.get(url + "/health").json()["stop_port"]
    assert lane is not None
    served = stop_guard_served(url)
    page.keyboard.press("Escape")
    page.wait_for_selector("#jobs li[data-state=stopped]", timeout=10_000)
    assert "halted" in page.locator("#message").inner_text()
    assert stop_guard_served(url) == served + 1  # the page's stop went through the stop guard
    first = httpx.get(url + "/health").json()["robot"]
    time.sleep(0.5)
    second = httpx.get(url + "/health").json()["robot"]
    assert not second["moving"]
    assert second["joints_rad"] == first["joints_rad"]
    assert second["last_halt_s"] is not None  # how fast: bench/api.py measures the stop latency
    page.screenshot(path=str(tmp_path / "stopped.png"))


def test_an_ambiguous_command_is_resolved_by_clicking_the_object(
    page: Any, server: tuple[str, SimCell], tmp_path: Path
) -> None:
    url, _ = server
    r = httpx.post(
        url + "/scene/reset", json={"seed": 7, "objects": ["red cube", "red cube", "green cup"]}, headers=AUTH
    )
    assert r.status_code == 200
    submit(page, "pick the red cube")
    page.wait_for_selector("#chooser:not([hidden])", timeout=20_000)
    job = newest_job(url)
    assert job["state"] == "needs_choice"
    x0, y0, x1, y1 = job["candidates"][1]["box"]
    image = page.locator("#stream")
    size = image.bounding_box()
    natural = page.evaluate(
        "[document.getElementById('stream').naturalWidth, document.getElementById('stream').naturalHeight]"
    )
    assert natural[0] > 0
    time.sleep(1.0)  # the stream shows the numbered candidate boxes within a frame or two
    page.screenshot(path=str(tmp_path / "choose.png"))
    image.click(
        position={"x": (x0 + x1) / 2 * size["width"] / natural[0], "y": (y0 + y1) / 2 * size["height"] / natural[1]}
    )
    page.wait_for_selector("#chooser", state="hidden", timeout=10_000)
    chosen = httpx.get(f"{url}/jobs/{job['id']}").json()
    assert chosen["state"] != "needs_choice"
    assert chosen["target"]["box"] == job["candidates"][1]["box"]
    page.get_by_role("button", name="STOP").click()
    page.wait_for_selector(f"#jobs li[data-job-id='{job['id']}'][data-state=stopped]", timeout=10_000)
