"""Headless Chromium through selenium for tests and measurements of report.html (Debian's
``chromium`` and ``chromium-driver``; `find_browser` says why when they are missing)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

CHROMIUM = ("chromium", "chromium-browser", "google-chrome")
DRIVER = ("chromedriver",)


def find_browser() -> tuple[str | None, str | None, str]:
    """(chromium path, chromedriver path, why not) — the paths are None when missing."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return None, None, "selenium is not installed (pip install -e '.[dev]')"
    browser = next((p for n in CHROMIUM if (p := shutil.which(n))), None)
    driver = next((p for n in DRIVER if (p := shutil.which(n))), None)
    if browser is None or driver is None:
        return browser, driver, ("no headless browser: install Debian's chromium and chromium-driver "
                                 "(apt-get install chromium chromium-driver; .ci/run does)")
    return browser, driver, ""


def open_chromium(*, width: int = 1400, height: int = 1600):
    """A headless Chromium WebDriver that records the browser console (no network needed)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    browser, driver, why = find_browser()
    if why:
        raise RuntimeError(why)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
              f"--window-size={width},{height}", "--allow-file-access-from-files"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=driver), options=opts)


def wait_for(drv, script: str, *, timeout: float = 30.0, poll: float = 0.05):
    """Poll a JS expression until it is truthy; returns its value (TimeoutError otherwise)."""
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        v = drv.execute_script(f"return ({script});")
        if v:
            return v
        time.sleep(poll)
    raise TimeoutError(f"{script!r} still false after {timeout} s")


def open_report(drv, path: Path, *, timeout: float = 60.0) -> float:
    """Load a report and wait for the explorer; returns seconds from navigation start to ready."""
    drv.get(Path(path).resolve().as_uri())
    ms = wait_for(drv, "document.getElementById('sa-explorer') && "
                       "document.getElementById('sa-explorer').dataset.readyMs", timeout=timeout)
    return float(ms) / 1000.0


def click_point(drv, point: int, *, trace: int = 1) -> None:
    """A real mouse click on point `point` of the linked maps' first panel (SVG marker)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    paths = drv.find_elements(By.CSS_SELECTOR, f"#sa-linked .scatterlayer .trace:nth-of-type({trace}) .points path")
    el = paths[point]
    drv.execute_script("arguments[0].scrollIntoView({block: 'center'});", el)
    ActionChains(drv).move_to_element(el).pause(0.3).click().perform()


def console_errors(drv) -> list[str]:
    return [e["message"] for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
