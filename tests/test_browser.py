"""Every notebook's widgets, driven with the keyboard in JupyterLab in headless Chromium.

What a student meets, checked where nothing else can: the widget renders, shows its figure, and the
figure changes when a control moves; no "Error displaying widget", no traceback, no ``⚠`` message.

Per notebook: a JupyterLab (from this venv, 127.0.0.1, a token, a free port, a temporary copy of
``notebooks/`` so nothing tracked is written) opens it in Chromium (Debian's ``/usr/bin/chromium``,
driven by Playwright's Python package; no browser download). Before any cell runs, no widget cell may
show the raw ``interactive(children=…`` text. Then only the cells the widgets need run: the code cells
up to the one that imports ``forklab`` (parameters + imports), cells tagged ``widget-setup``, and the
cells that call ``widgets.interactive(``; strict nbval already executes every cell twice (``make test``
and ``make test-portable``), so running them all here again would cost ~2 minutes a notebook for
nothing new. ``FORKLAB_BROWSER_RUN_ALL=1`` runs every cell instead. For every widget and slider: one step with
an arrow key (the image must change), End, Home (an image, no message), then the start value back
typed into the readout. Dropdowns are set through the DOM (next, last, first option): JupyterLab does
not pass arrow keys to a focused ``<select>`` inside an output. Screenshots and per-notebook timings
go to ``build/browser-test/`` (git-ignored), or to ``$FORKLAB_BROWSER_ARTIFACTS``.

Missing Chromium or Playwright FAILS with the reason (``make setup`` installs both; as root it apt-installs
Chromium); set
``FORKLAB_SKIP_BROWSER=1`` to skip on purpose.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CHROMIUM = Path(os.environ.get("FORKLAB_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(os.environ.get("FORKLAB_BROWSER_ARTIFACTS", ROOT / "build" / "browser-test"))
RUN_ALL = os.environ.get("FORKLAB_BROWSER_RUN_ALL") == "1"
WIDGET_CALL = re.compile(r"widgets\.interactive\(")
CELL_TIMEOUT_S = 600 if RUN_ALL else 180
UPDATE_TIMEOUT_S = 60  # one widget update on a loaded 2-core machine; ~1 s when idle
LAB_SETTINGS = {  # no autosave, no news or update checks (no network), no extension manager
    "@jupyterlab/docmanager-extension/plugin": {"autosave": False},
    "@jupyterlab/apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/extensionmanager-extension/plugin": {"enabled": False},
}
TIMINGS: dict[str, dict] = {}


def cells_to_run(path: Path) -> list[int]:
    """Indices of the code cells the widgets need (see the module docstring), in order."""
    cells = json.loads(path.read_text())["cells"]
    code = [i for i, c in enumerate(cells) if c["cell_type"] == "code"]
    if RUN_ALL:
        return code
    source = {i: "".join(cells[i]["source"]) for i in code}
    setup_end = next((i for i in code if re.search(r"^\s*(import|from) forklab", source[i], re.M)), code[0])
    return [i for i in code if i <= setup_end or WIDGET_CALL.search(source[i])
            or "widget-setup" in cells[i]["metadata"].get("tags", [])]


def widget_cells(path: Path) -> list[int]:
    cells = json.loads(path.read_text())["cells"]
    return [i for i, c in enumerate(cells) if c["cell_type"] == "code" and WIDGET_CALL.search("".join(c["source"]))]


# --- the browser and the lab --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def sync_playwright():
    if os.environ.get("FORKLAB_SKIP_BROWSER") == "1":
        pytest.skip("FORKLAB_SKIP_BROWSER=1: the real-browser widget test is skipped on purpose")
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}: run `make chromium` as root (apt-get install -y chromium) or "
                    "`sudo apt-get install -y chromium`; set FORKLAB_CHROMIUM to another binary, or "
                    "FORKLAB_SKIP_BROWSER=1 to skip this test on purpose", pytrace=False)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"Playwright's Python package is missing ({exc}): `make setup` installs it from "
                    "requirements.lock; or FORKLAB_SKIP_BROWSER=1 to skip this test on purpose", pytrace=False)
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def lab(sync_playwright, tmp_path_factory):
    """A JupyterLab server on a temporary copy of notebooks/; yields (base_url, token)."""
    root = tmp_path_factory.mktemp("lab")
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    settings = root / "settings"
    for plugin, values in LAB_SETTINGS.items():
        file = settings / f"{plugin}.jupyterlab-settings"
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_text(json.dumps(values))
    port, token = _free_port(), os.urandom(16).hex()
    env = {**os.environ, "JUPYTERLAB_SETTINGS_DIR": str(settings), "JUPYTERLAB_WORKSPACES_DIR": str(root / "ws"),
           "JUPYTER_CONFIG_DIR": str(root / "config"), "JUPYTER_RUNTIME_DIR": str(root / "runtime")}
    env.pop("TQDM_DISABLE", None)  # as in `make lab`: the bars are part of what a student sees
    command = [str(Path(sys.executable).parent / "jupyter-lab"), "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--LabApp.expose_app_in_browser=True", "--ServerApp.disable_check_xsrf=False"]
    if os.geteuid() == 0:
        command.append("--allow-root")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS / "jupyterlab.log", "w")  # noqa: SIM115 (closed at teardown)
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=5) as reply:
                if reply.status == 200:
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            pytest.fail(f"JupyterLab did not start (see {ARTIFACTS / 'jupyterlab.log'})", pytrace=False)
        time.sleep(0.5)
    yield base, token
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="session")
def browser(sync_playwright, tmp_path_factory):
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=str(CHROMIUM), headless=True,
            args=CHROMIUM_FLAGS, viewport={"width": 1400, "height": 1000})
        yield context
        context.close()


def _report(request, name: str, t: dict) -> None:
    """One line per notebook on the terminal (uncaptured), and all of them in timings.json."""
    (ARTIFACTS / "timings.json").write_text(json.dumps(TIMINGS, indent=1))
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        reporter.write_line(f"{name}: {t['total_s']:.0f} s (open {t['open_s']:.0f} s, cells {t['cells_s']:.0f} s, "
                            f"{t['widgets']} widget(s), {t['updates']} updates, median {t['median_update_s']:.2f} s, "
                            f"max {t['max_update_s']:.2f} s)")


# --- driving one notebook -----------------------------------------------------------------------------

JS_RUN_CELL = """async ([index, timeoutMs]) => {
  const panel = window.jupyterapp.shell.currentWidget;
  const notebook = panel.content;
  notebook.deselectAll();
  notebook.activeCellIndex = index;
  const run = window.jupyterapp.commands.execute('notebook:run-cell');
  const timeout = new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), timeoutMs));
  await Promise.race([run, timeout]);
  const outputs = notebook.widgets[index].model.sharedModel.toJSON().outputs || [];
  return outputs.filter(o => o.output_type === 'error').map(o => `${o.ename}: ${o.evalue}`);
}"""

JS_NOTEBOOK_READY = """(name) => {
  const app = window.jupyterapp;
  const panel = app && app.shell.currentWidget;
  if (!panel || !panel.context || !panel.context.path.endsWith(name) || !panel.content.widgets.length) return false;
  const kernel = panel.sessionContext.session && panel.sessionContext.session.kernel;
  return !!kernel && kernel.status === 'idle';
}"""

PROBLEMS = re.compile(r"Error displaying widget|Traceback \(most recent call last\)|Loading widget\.\.\.")


class Failure(AssertionError):
    pass


def _page_problems(page) -> list[str]:
    found = []
    for text in page.locator(".jp-OutputArea-output").all_inner_texts():
        match = PROBLEMS.search(text)
        if match:
            found.append(f"{match.group(0)!r} in an output: {text.strip()[:300]!r}")
    return found


def _updates(widget) -> int:
    classes = widget.locator(".forklab-widget-status").get_attribute("class") or ""
    match = re.search(r"forklab-updates-(\d+)", classes)
    return int(match.group(1)) if match else 0


def _image(widget) -> str | None:
    images = widget.locator(".forklab-widget-output img")
    return images.first.get_attribute("src") if images.count() else None


def _message(widget) -> str:
    return " ".join(t.strip() for t in widget.locator(".forklab-widget-output").all_inner_texts()).strip()


def _wait_for_update(page, widget, before: int, what: str) -> float:
    start = time.monotonic()
    while _updates(widget) <= before:
        if time.monotonic() - start > UPDATE_TIMEOUT_S:
            raise Failure(f"{what}: the widget did not update within {UPDATE_TIMEOUT_S} s")
        page.wait_for_timeout(50)
    page.wait_for_timeout(100)  # the Output's new state arrives with the same kernel message burst
    return time.monotonic() - start


def _check_shown(page, widget, what: str) -> str:
    message = _message(widget)
    if "⚠" in message:
        raise Failure(f"{what}: the widget shows a message instead of its plot: {message!r}")
    image = _image(widget)
    if image is None:
        raise Failure(f"{what}: no image in the widget's output (shown: {message!r})")
    problems = _page_problems(page)
    if problems:
        raise Failure(f"{what}: " + "; ".join(problems))
    return image


def _press(page, widget, control, key: str, what: str, expect_change: bool, timings: list[float]) -> None:
    before_n, before_image = _updates(widget), _image(widget)
    focus = control.locator(".noUi-handle, select").first
    focus.focus()
    focus.press(key)
    timings.append(_wait_for_update(page, widget, before_n, what))
    image = _check_shown(page, widget, what)
    if expect_change and image == before_image:
        raise Failure(f"{what}: the displayed image did not change")


def _slider_state(control) -> tuple[float, float, float]:
    handle = control.locator(".noUi-handle").first
    return tuple(float(handle.get_attribute(f"aria-value{k}")) for k in ("now", "min", "max"))


def _drive_control(page, widget, control, what: str, timings: list[float]) -> None:
    if control.locator("select").count():
        select = control.locator("select").first
        options = select.locator("option").all_inner_texts()
        start = select.evaluate("s => s.selectedIndex")
        if len(options) < 2:
            return
        # Chosen through the DOM, not the keyboard: in JupyterLab a focused <select> inside an output does not
        # take arrow keys (Up/Down are notebook shortcuts, Left/Right were ignored in our runs).
        for index, label in ((start + 1 if start < len(options) - 1 else start - 1, "next option"),
                             (len(options) - 1, "last option"), (0, "first option")):
            if select.evaluate("s => s.selectedIndex") == index:
                continue
            before_n, before_image = _updates(widget), _image(widget)
            select.select_option(index=index)
            timings.append(_wait_for_update(page, widget, before_n, f"{what} ({label})"))
            image = _check_shown(page, widget, f"{what} ({label})")
            if label == "next option" and image == before_image:
                raise Failure(f"{what} ({label}): the displayed image did not change")
        if select.evaluate("s => s.selectedIndex") != start:
            before = _updates(widget)
            select.select_option(index=start)
            timings.append(_wait_for_update(page, widget, before, f"{what} (back to the start value)"))
            _check_shown(page, widget, f"{what} (back to the start value)")
        return
    now, lo, hi = _slider_state(control)
    if lo == hi:
        return
    step_key = "ArrowRight" if now < hi else "ArrowLeft"
    _press(page, widget, control, step_key, f"{what} ({step_key})", True, timings)
    if _slider_state(control)[0] != hi:
        _press(page, widget, control, "End", f"{what} (End = {hi:g})", False, timings)
    if _slider_state(control)[0] != lo:
        _press(page, widget, control, "Home", f"{what} (Home = {lo:g})", False, timings)
    if _slider_state(control)[0] != now:  # back through the readout box, with the keyboard
        before = _updates(widget)
        readout = control.locator(".widget-readout").first
        readout.click()
        page.keyboard.press("Control+A")
        page.keyboard.type(f"{now:g}")
        page.keyboard.press("Enter")
        timings.append(_wait_for_update(page, widget, before, f"{what} (back to {now:g})"))
        _check_shown(page, widget, f"{what} (back to {now:g})")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_widget_shows_its_plot_and_follows_the_keyboard(path, lab, browser, request):
    base, token = lab
    out = ARTIFACTS / path.stem
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    start = time.monotonic()
    page = browser.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{base}/lab/tree/notebooks/{path.name}?reset&token={token}")
        page.wait_for_function(JS_NOTEBOOK_READY, arg=path.name, timeout=180_000, polling=250)
        opened = time.monotonic()
        for n, index in enumerate(widget_cells(path), start=1):  # JupyterLab renders cells once scrolled to
            cell = page.locator(".jp-Notebook .jp-Cell").nth(index)
            cell.scroll_into_view_if_needed()
            page.wait_for_timeout(500)
            cell.screenshot(path=out / f"widget{n}-before-run.png")
            assert "interactive(children=" not in cell.inner_text(), (
                f"before the first run, cell {index} shows the raw repr `interactive(children=…`: re-execute the "
                "notebook with the current forklab.widgets (make figures)")
        for index in cells_to_run(path):
            errors = page.evaluate(JS_RUN_CELL, [index, CELL_TIMEOUT_S * 1000])
            assert not errors, f"cell {index} raised {errors} (if a widget needs another cell, tag it `widget-setup`)"
        cells_done = time.monotonic()

        widgets = page.locator(".forklab-interactive")
        expected = len(widget_cells(path))
        page.wait_for_function(f"() => document.querySelectorAll('.forklab-interactive').length >= {expected}",
                               timeout=60_000)
        assert widgets.count() == expected, f"{widgets.count()} widgets on the page, {expected} widget cells"
        timings: list[float] = []
        for k in range(expected):
            widget = widgets.nth(k)
            widget.scroll_into_view_if_needed()
            what = f"{path.stem}: widget {k + 1}"
            page.wait_for_function("w => w.querySelector('.forklab-widget-output img, .forklab-widget-output pre')",
                                   arg=widget.element_handle(), timeout=UPDATE_TIMEOUT_S * 1000)
            _check_shown(page, widget, f"{what} after its cell ran")
            widget.screenshot(path=out / f"widget{k + 1}-first.png")
            controls = widget.locator(":scope > .widget-slider, :scope > .widget-dropdown")
            assert controls.count() > 0, f"{what}: no slider or dropdown found"
            for c in range(controls.count()):
                control = controls.nth(c)
                label = control.locator(".widget-label").first.inner_text().strip() or f"control {c + 1}"
                _drive_control(page, widget, control, f"{what}, {label}", timings)
            widget.screenshot(path=out / f"widget{k + 1}-after.png")
        done = time.monotonic()
        TIMINGS[path.stem] = {"total_s": done - start, "open_s": opened - start, "cells_s": cells_done - opened,
                              "widgets": expected, "updates": len(timings),
                              "median_update_s": sorted(timings)[len(timings) // 2] if timings else 0.0,
                              "max_update_s": max(timings, default=0.0), "update_s": [round(t, 2) for t in timings]}
        _report(request, path.stem, TIMINGS[path.stem])
    except Exception:
        page.screenshot(path=out / "failure.png", full_page=True)
        raise
    finally:
        try:
            page.evaluate("() => window.jupyterapp.shell.currentWidget.sessionContext.shutdown()")
        except Exception:  # the page may be gone; the server's teardown stops its kernels too
            pass
        page.close()
