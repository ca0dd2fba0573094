"""The Dagster UI as an artist uses it, in headless Chromium (Debian's, driven by the playwright package).

`dagster dev` (webserver + daemon, so the queued run is launched) on a free loopback port against a
temporary DAGSTER_HOME with a small sample render, a prompt wedge of two seeds (the second seed generated
beforehand) and their partitions registered. The artist's main path, in one page flow: the asset graph (groups
expanded), `control_videos` materialized for the shot, its logs, metadata and contact sheet; then the prompt's
generation and 4K upscale launched from `full_cycle_job` with the prompt partition picked, the model's step
lines watched arriving while the run is still going, the generated video's frames picture, and the wedge's
comparison materialized and its contact sheet opened. Screenshots are taken once the page has settled (no
animation running) and go to the test's tmp_path; with COSMOS_UPDATE_SCREENSHOTS=1 they are copied to
docs/screenshots/.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest

from cosmos_assets.defs.partitions import PROMPTS, SHOTS, WEDGES
from cosmos_assets.layout import ProjectLayout
from cosmos_assets.media.sample_render import make_sample_render

pytestmark = [pytest.mark.integration, pytest.mark.browser]

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOT = "sample_flythrough"
WEDGE, SEEDS = "look", (1, 2)
PROMPT = f"{WEDGE}_01_seed-{SEEDS[0]}"  # the wedge's first variant is the prompt the artist materializes
STEP_SECONDS_ENV, STEP_SECONDS = "COSMOS_PREVIEW_STEP_SECONDS", "0.25"  # 35 steps: ~9 s of live model lines per stage
FRAMES, WIDTH, HEIGHT = 24, 256, 144
SERVER_START_SECONDS = 180
RUN_SECONDS = 300
UI_TIMEOUT_MS = 60_000
DOCS_SCREENSHOTS = REPO / "docs" / "screenshots"
UPDATE_SCREENSHOTS_ENV = "COSMOS_UPDATE_SCREENSHOTS"  # =1 copies the final screenshots into docs/ for the README
FINAL_SCREENSHOTS = ("01_asset_graph.png", "02_materialize_partition.png", "03_run_logs.png", "04_asset_metadata.png",
                     "05_contact_sheet.png", "06_model_lines_live.png", "07_frames_image.png",
                     "08_wedge_comparison.png")  # fmt: skip
LOCATION = "cosmos_assets.definitions"  # `dagster dev -m cosmos_assets.definitions` names the code location so
STEP_LINE = re.compile(r"generate chunk 1/1 step \d+/35")


@dataclass
class UiServer:
    url: str
    root: Path
    home: Path
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def instance_at(home: Path) -> dg.DagsterInstance:
    from dagster._core.instance.ref import InstanceRef

    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))


def wait_for_http(url: str, process: subprocess.Popen, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"dagster dev exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"dagster dev did not answer {url} within {seconds}s:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    """SIGTERM the process group we started (dagster dev, its webserver, daemon and code server), then SIGKILL."""
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def ui_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    root = tmp_path_factory.mktemp("ui_project")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster_home" / "dagster.yaml", home / "dagster.yaml")
    layout = ProjectLayout(root=root)
    layout.ensure_working_folders()
    make_sample_render(layout.render_dir(SHOT), frames=FRAMES, width=WIDTH, height=HEIGHT)
    prompts, wedge = make_wedge(layout, root / "host")
    instance = instance_at(home)
    instance.add_dynamic_partitions(SHOTS.name, [SHOT])
    instance.add_dynamic_partitions(PROMPTS.name, prompts)
    instance.add_dynamic_partitions(WEDGES.name, [wedge])
    port = free_port()
    log = root / "dagster_dev.log"
    env = {
        **os.environ,
        "COSMOS_PROJECT_ROOT": str(root),
        "DAGSTER_HOME": str(home),
        "COSMOS_HOST": "preview",
        "REMOTE_DIR": str(root / "host"),
        STEP_SECONDS_ENV: STEP_SECONDS,
    }
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-m", "cosmos_assets.definitions", "-h", "127.0.0.1", "-p", str(port)],
            cwd=root,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_http(url + "/server_info", process, log, SERVER_START_SECONDS)
        yield UiServer(url=url, root=root, home=home, log=log)
    finally:
        stop(process)


def make_wedge(layout: ProjectLayout, host_root: Path) -> tuple[list[str], str]:
    """The artist's prompt for the shot and a wedge of it over two seeds; the second seed is generated here, outside
    Dagster (the first is the prompt the test materializes in the UI). Returns the prompt keys and the wedge name."""
    from cosmos_assets.machines.local import LocalMachine
    from cosmos_assets.media import encode_control_videos, scan_render_folder
    from cosmos_assets.models.registry import backend_named
    from cosmos_assets.prompts.files import new_prompt_spec, write_spec
    from cosmos_assets.prompts.wedge_vary import parse_vary
    from cosmos_assets.prompts.wedges import plan_wedge, write_wedge
    from cosmos_assets.runs.runner import run_generation

    encode_control_videos(scan_render_folder(layout.render_dir(SHOT)), layout.shot_videos_dir(SHOT))
    base = layout.root / "base_prompt.json"
    write_spec(new_prompt_spec(SHOT, "A slow camera move over toy blocks at dusk, cinematic."), base)
    plan = plan_wedge(layout, base, [parse_vary(f"seed={SEEDS[0]},{SEEDS[1]}")], name=WEDGE)
    write_wedge(layout, plan)
    prompts = [variant.prompt for variant in plan.manifest.variants]
    run_generation(layout, LocalMachine(host_root), backend_named("preview"), prompts[1], log=lambda line: None)
    return prompts, WEDGE


@pytest.fixture()
def page(tmp_path: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 860},
        )
        context.set_default_timeout(UI_TIMEOUT_MS)
        try:
            yield context.new_page()
        finally:
            context.close()


def dismiss_community_dialog(page) -> None:
    """A fresh DAGSTER_HOME shows "Join the Dagster community" over the page on the first visit."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=10_000)
    except Exception:  # noqa: BLE001 - the dialog is optional: absent means nothing to dismiss
        return
    skip.click()


def pick_partition(page, dialog, key: str, attempts: int = 6):
    """Choose one partition in the Materialize dialog's "Custom" picker; returns the "Launch 1 run" button.

    The picker's menu re-renders while partition statuses load, so a click can hit a detached item: retry (on a
    loaded 2-core machine the statuses can take several rounds to settle).
    """
    launch = dialog.get_by_role("button", name="Launch 1 run")
    for _ in range(attempts):
        dialog.get_by_text("Select a partition or create one").click()
        page.keyboard.type(key)
        try:
            page.get_by_role("menuitem", name=key).last.click(timeout=10_000)
        except Exception:  # noqa: BLE001 - playwright's TimeoutError; retried below
            pass
        page.keyboard.press("Escape")
        try:
            launch.wait_for(state="visible", timeout=10_000)
            return launch
        except Exception:  # noqa: BLE001
            continue
    pytest.fail(f"could not pick partition {key} in the Materialize dialog after {attempts} attempts")


def wait_for_texts(page, texts: list[str], seconds: float = UI_TIMEOUT_MS / 1000) -> str:
    """Poll the page's text (bounded) until every one of ``texts`` is in it; returns the text."""
    deadline = time.monotonic() + seconds
    while True:
        body = page.locator("body").inner_text()
        missing = [t for t in texts if t not in body]
        if not missing:
            return body
        if time.monotonic() > deadline:
            pytest.fail(f"{missing} not shown on {page.url} after {seconds}s")
        page.wait_for_timeout(500)


def settle(page, quiet_ms: int = 300) -> None:
    """Wait (bounded) until no finite animation runs (dialogs faded in, toasts slid in), then a short quiet spell.

    Spinners loop forever and are left out; a screenshot taken after this shows the page as it stays."""
    page.wait_for_function(
        """() => document.getAnimations().every(a => a.playState !== 'running'
                 || a.effect === null || a.effect.getComputedTiming().endTime === Infinity)""",
        timeout=UI_TIMEOUT_MS,
    )
    page.wait_for_timeout(quiet_ms)


def expand_all_groups(page, asset: str) -> None:
    """The lineage graph opens with its groups collapsed; Alt+E (its "Expand all groups") shows the assets."""
    node = page.get_by_text(asset, exact=True).first
    try:
        node.wait_for(state="visible", timeout=3_000)
    except Exception:  # noqa: BLE001 - collapsed: expand
        page.keyboard.press("Alt+e")
        node.wait_for(state="visible")


def launch_from_dialog(page, key: str) -> str:
    """In an open Materialize dialog: confirm a missing-upstream notice, pick ``key``, launch; returns the run id."""
    confirm = page.get_by_role("button", name="Confirm")  # "upstream ... not materialized yet"
    picker = page.get_by_text("Select a partition or create one")
    confirm.or_(picker).first.wait_for(state="visible")
    if confirm.is_visible():
        confirm.click()
    launch = pick_partition(page, page.get_by_role("dialog"), key)
    launch.click()
    return run_id_from_toast(page)


def run_id_from_toast(page) -> str:
    view = page.get_by_role("link", name="View", exact=True).last
    view.wait_for(state="visible")
    return view.get_attribute("href").rstrip("/").split("/")[-1]


def open_markdown_picture(page, row_name: str):
    """Click ``[Show Markdown]`` on a metadata row; returns the dialog's inline JPEG once it has loaded."""
    page.get_by_role("row").filter(has_text=row_name).get_by_text("[Show Markdown]").first.click()
    picture = page.get_by_role("dialog").locator("img[src^='data:image/jpeg;base64,']").first
    picture.wait_for(state="visible")
    natural = picture.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert natural[0] and 0 < natural[1] <= 480 and natural[2] > 0, natural
    return picture


def wait_for_run(home: Path, run_id: str, seconds: float) -> dg.DagsterRunStatus:
    """Poll the instance (bounded) until the run is finished; returns its status."""
    instance = instance_at(home)
    deadline = time.monotonic() + seconds
    finished = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.status in finished:
            return run.status
        time.sleep(1)
    run = instance.get_run_by_id(run_id)
    pytest.fail(f"run {run_id} still {run.status if run else 'unknown'} after {seconds}s")


def test_artist_materializes_a_shot_and_sees_metadata_and_contact_sheet(
    ui_server: UiServer, page, tmp_path: Path
) -> None:
    shots_dir = tmp_path / "screenshots"
    shots_dir.mkdir()

    def snap(name: str) -> None:
        settle(page)
        page.screenshot(path=str(shots_dir / name))

    # 1. The asset graph: the groups in data-flow order, expanded to show their assets.
    page.goto(ui_server.url + "/asset-groups", wait_until="domcontentloaded")
    dismiss_community_dialog(page)
    for group in ("renders", "controls", "prompts", "generation", "wedges"):
        page.get_by_text(group, exact=True).first.wait_for(state="visible")
    expand_all_groups(page, "upscaled_videos")
    for asset in ("shots", "control_videos", "prompt_inputs", "prompt_specs", "generated_videos", "wedge_comparisons"):
        page.get_by_text(asset, exact=True).first.wait_for(state="visible")
    snap("01_asset_graph.png")

    # 2. control_videos' page: description, group, kinds; Materialize the shot's partition.
    page.goto(ui_server.url + "/assets/control_videos", wait_until="domcontentloaded")
    page.get_by_text("encoded in-process with PyAV", exact=False).first.wait_for(state="visible")
    page.get_by_role("button", name="Materialize…").click()
    confirm = page.get_by_role("button", name="Confirm")  # "upstream `shots` not materialized yet"
    dialog_title = page.get_by_text("Launch runs to materialize control_videos")
    confirm.or_(dialog_title).first.wait_for(state="visible")
    if confirm.is_visible():
        confirm.click()
    dialog = page.get_by_role("dialog")
    launch = pick_partition(page, dialog, SHOT)
    snap("02_materialize_partition.png")
    launch.click()

    # 3. The toast links to the run; wait (bounded) for it to finish, then read its logs in the UI.
    view = page.get_by_role("link", name="View", exact=True)
    view.wait_for(state="visible")
    run_id = view.get_attribute("href").rstrip("/").split("/")[-1]
    status = wait_for_run(ui_server.home, run_id, RUN_SECONDS)
    assert status == dg.DagsterRunStatus.SUCCESS, ui_server.log.read_text()[-3000:]
    page.goto(f"{ui_server.url}/runs/{run_id}", wait_until="domcontentloaded")
    wait_for_texts(page, ["RUN_SUCCESS"])
    # The log list is virtualised and opens at its end: filter it to the asset's own step.
    log_filter = page.get_by_placeholder("Filter…")
    log_filter.fill("step:control_videos")
    log_filter.press("Enter")
    wait_for_texts(
        page,
        [
            f"encode color: {FRAMES}/{FRAMES} frames",
            "ASSET_MATERIALIZATION",
            "frame_count",
            "contact_sheet",
            "[Show Markdown]",
        ],
    )
    page.get_by_text(f"encode color: {FRAMES}/{FRAMES} frames").first.scroll_into_view_if_needed()
    snap("03_run_logs.png")

    # 4. The asset's page for the partition: the metadata table with the latest values.
    page.goto(f"{ui_server.url}/assets/control_videos?partition={SHOT}", wait_until="domcontentloaded")
    frame_row = page.get_by_role("row").filter(has_text="frame_count").first
    frame_row.wait_for(state="visible")
    assert frame_row.inner_text().split()[-1] == str(FRAMES)
    resolution_row = page.get_by_role("row").filter(has_text="render_resolution").first
    assert f"{WIDTH}x{HEIGHT}" in resolution_row.inner_text()
    snap("04_asset_metadata.png")

    # 5. The picture: the preview entry opens the contact sheet (an inline JPEG) in a dialog.
    open_markdown_picture(page, "contact_sheet_image")
    assert "contact_sheet.png" in page.get_by_role("dialog").inner_text()
    snap("05_contact_sheet.png")

    # The full-size sheet is on disk where the metadata says, and the checks ran and passed.
    assert (ProjectLayout(root=ui_server.root).shot_videos_dir(SHOT) / "contact_sheet.png").stat().st_size > 0
    instance = instance_at(ui_server.home)
    evaluations = [
        e.dagster_event.event_specific_data
        for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    ]
    assert {e.check_name for e in evaluations} >= {
        "controls_match_render",
        "controls_decodable",
        "controls_owned_by_user",
    }
    assert all(e.passed for e in evaluations), [(e.check_name, e.description) for e in evaluations]

    artist_generates_a_prompt_and_compares_its_wedge(ui_server, page, snap)

    for name in FINAL_SCREENSHOTS:
        assert (shots_dir / name).stat().st_size > 10_000, f"{name} looks empty"
    if os.environ.get(UPDATE_SCREENSHOTS_ENV) == "1":
        DOCS_SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        for name in FINAL_SCREENSHOTS:
            shutil.copyfile(shots_dir / name, DOCS_SCREENSHOTS / name)


def artist_generates_a_prompt_and_compares_its_wedge(ui_server: UiServer, page, snap) -> None:
    """Steps 6-8 of the one page flow (one webserver): generation + upscale of a prompt partition, watched live;
    the frames picture; the wedge's comparison."""
    instance = instance_at(ui_server.home)

    # 6. full_cycle_job (validate, generate, upscale) for the prompt partition; the model's lines arrive while it runs.
    page.goto(f"{ui_server.url}/locations/{LOCATION}/jobs/full_cycle_job", wait_until="domcontentloaded")
    page.get_by_role("button").filter(has_text=re.compile(r"^Materialize all")).first.click()  # "Materialize all (3)…"
    run_id = launch_from_dialog(page, PROMPT)
    page.goto(f"{ui_server.url}/runs/{run_id}", wait_until="domcontentloaded")
    page.get_by_text(STEP_LINE).first.wait_for(state="visible", timeout=RUN_SECONDS * 1000)
    seen_while = instance.get_run_by_id(run_id).status
    assert seen_while in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED), seen_while  # live, not replayed
    first_seen = page.get_by_text(STEP_LINE).last.inner_text()
    page.get_by_text(re.compile(r"step (3[0-5])/35")).first.wait_for(state="visible", timeout=RUN_SECONDS * 1000)
    assert first_seen != page.get_by_text(STEP_LINE).last.inner_text()  # more lines arrived on the open page
    snap("06_model_lines_live.png")
    status = wait_for_run(ui_server.home, run_id, RUN_SECONDS)
    assert status == dg.DagsterRunStatus.SUCCESS, ui_server.log.read_text()[-3000:]
    layout = ProjectLayout(root=ui_server.root)
    assert (layout.upscaled_dir(PROMPT) / "output.mp4").exists()

    # 7. The generated video's first, middle and last frame.
    page.goto(f"{ui_server.url}/assets/generated_videos?partition={PROMPT}", wait_until="domcontentloaded")
    page.get_by_role("row").filter(has_text="frames_image").first.wait_for(state="visible")
    open_markdown_picture(page, "frames_image")
    snap("07_frames_image.png")

    # 8. The wedge's comparison: both seeds tiled, each labelled; its contact sheet in the UI.
    page.goto(f"{ui_server.url}/assets/wedge_comparisons", wait_until="domcontentloaded")
    page.get_by_role("button", name="Materialize…").click()
    run_id = launch_from_dialog(page, WEDGE)
    assert wait_for_run(ui_server.home, run_id, RUN_SECONDS) == dg.DagsterRunStatus.SUCCESS, ui_server.log.read_text()[
        -3000:
    ]
    page.goto(f"{ui_server.url}/assets/wedge_comparisons?partition={WEDGE}", wait_until="domcontentloaded")
    tiles_row = page.get_by_role("row").filter(has_text="tiles").first
    tiles_row.wait_for(state="visible")
    assert tiles_row.inner_text().split()[-1] == str(len(SEEDS))
    open_markdown_picture(page, "contact_sheet_image")
    assert "wedge look" in page.get_by_role("dialog").inner_text()
    snap("08_wedge_comparison.png")
    assert (layout.outputs_dir / "_wedges" / WEDGE / "grid.mp4").stat().st_size > 0
