"""The orbit explorer and report.html in a real headless browser (Debian's chromium through Selenium).

Without a browser these tests skip with the reason, unless `CI` is set: there `.ci/run` installs chromium and
chromium-driver, and a missing browser is a failure.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from ssl_eq.cli import main
from ssl_eq.orbit.explorer import write_explorer

from report_fixtures import rotation_run

PAGE_WIDTH = 1400
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
DRIVERS = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")


def _find(paths: tuple[str, ...], name: str) -> str | None:
    return next((p for p in paths if Path(p).is_file()), None) or shutil.which(name)


@pytest.fixture(scope="module")
def browser():
    chromium, driver = _find(CHROMIUM, "chromium"), _find(DRIVERS, "chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    if not (chromium and driver and webdriver):
        reason = ("no chromium / chromedriver (apt-get install chromium chromium-driver; .ci/run does)"
                  if webdriver else "selenium is not installed")
        if os.environ.get("CI"):
            pytest.fail(f"CI is set but {reason}")
        pytest.skip(reason)
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                f"--window-size={PAGE_WIDTH},900", "--hide-scrollbars"):
        options.add_argument(arg)
    drv = webdriver.Chrome(service=Service(driver), options=options)
    drv.set_window_size(PAGE_WIDTH, 900)
    yield drv
    drv.quit()


def _orbit_record(skill: float, steps: int = 8, objects: int = 3) -> dict:
    """An orbit.json entry: the probe error rises with |Δ| (less for a better run), Hit@1 falls."""
    x = np.linspace(-180, 180, steps, endpoint=False)
    rng = np.random.default_rng(int(skill * 10))
    per_object = {"invariance": np.abs(x)[None] / 180 * (1.2 - skill) + rng.uniform(0, 0.1, (objects, steps)),
                  "probe_equi": np.abs(x)[None] * (1 - skill) + rng.uniform(0, 10, (objects, steps)),
                  "hit1": (np.abs(x)[None] < 90 * skill + rng.uniform(0, 40, (objects, 1))).astype(float)}
    curves = {k: {"mean": v.mean(0).tolist(), "q25": np.quantile(v, 0.25, 0).tolist(),
                  "q75": np.quantile(v, 0.75, 0).tolist(), "per_object": v.tolist()} for k, v in per_object.items()}
    return {"latent": "rot_z", "range": "full", "source": "dataset", "steps": steps,
            "parameter": np.deg2rad(x).tolist(), "unit": "deg", "scale": 180 / np.pi, "closed": True,
            "polar_period": 2 * np.pi, "reference_index": steps // 2, "objects": [f"obj{i}" for i in range(objects)],
            "train_band": [-90.0, 90.0], "curves": curves, "auc": {k: 0.0 for k in curves}}


def _frames(objects: int = 3, steps: int = 8, size: int = 16) -> np.ndarray:
    """(N, S, H, W, 3) frames whose colour changes with the step (and the object)."""
    f = np.zeros((objects, steps, size, size, 3), np.uint8)
    f[..., 0] = (np.arange(steps) * 30)[None, :, None, None]
    f[..., 1] = (np.arange(objects) * 80)[:, None, None, None]
    return f


def test_explorer_slider_moves_the_frame_and_every_marker(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    key = "rot_z/full@dataset"
    page = write_explorer({key: {"sie": _orbit_record(0.8), "vicreg": _orbit_record(0.3)}}, {key: _frames()},
                          tmp_path / "orbit_explorer.html")
    browser.get(page.as_uri())
    browser.find_element(By.ID, "oe-object").send_keys("obj1")  # one object: its curve is the marked one
    canvas = browser.find_element(By.ID, "oe-frame")
    markers = browser.find_elements(By.CSS_SELECTOR, ".oe-marker")
    assert len(markers) == 2 * 3  # two runs overlaid on each of the three measures
    before = (canvas.get_attribute("data-frame"), browser.execute_script("return arguments[0].toDataURL()", canvas),
              [m.get_attribute("cx") for m in markers], browser.find_element(By.ID, "oe-value").text)
    assert before[0] == "1,4" and before[3] == "Δ rot_z = 0.00 deg"  # starts at view 0 (Δ = 0)
    slider = browser.find_element(By.ID, "oe-slider")
    for _ in range(2):
        slider.send_keys(Keys.ARROW_RIGHT)
    after = (canvas.get_attribute("data-frame"), browser.execute_script("return arguments[0].toDataURL()", canvas),
             [m.get_attribute("cx") for m in markers], browser.find_element(By.ID, "oe-value").text)
    assert after[0] == "1,6" and after[3] == "Δ rot_z = 90.0 deg"
    assert after[1] != before[1]  # another frame drawn
    assert all(float(a) > float(b) for a, b in zip(after[2], before[2]))  # every marker moved right
    pixel = browser.execute_script("return Array.from(arguments[0].getContext('2d').getImageData(5, 5, 1, 1).data)",
                                   canvas)
    assert pixel[:3] == [180, 80, 0]  # frame (object 1, step 6) of the sheet
    # "all": every object's curve beside each run's mean
    browser.find_element(By.ID, "oe-object").send_keys("all")
    assert len(browser.find_elements(By.CSS_SELECTOR, ".oe-object-curve")) == 2 * 3 * 3
    browser.find_element(By.CSS_SELECTOR, "input.oe-run[value=vicreg]").click()  # one run hidden
    assert len(browser.find_elements(By.CSS_SELECTOR, ".oe-marker")) == 3
    browser.save_screenshot(str(tmp_path / "explorer.png"))


def test_explorer_shows_a_two_parameter_orbit_as_heatmaps(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    s1, s2 = 4, 3
    record = _orbit_record(0.8, steps=s1 * s2)
    record.update(latent="rot_z,spot_hue", parameter=list(range(s1 * s2)), unit="grid frame", scale=1.0,
                  reference_index=2 * s2 + 1, train_band=None,
                  grid={"latents": ["rot_z", "spot_hue"], "shape": [s1, s2], "units": ["deg", "hue"],
                        "parameters": [[-180, -90, 0, 90], [-0.33, 0, 0.33]], "reference": [2, 1]})
    key = "rot_z,spot_hue/full@dataset"
    page = write_explorer({key: {"sie": record}}, {key: _frames(steps=s1 * s2)}, tmp_path / "grid.html")
    browser.get(page.as_uri())
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.oe-chart")
    assert len(charts) == 3 and all(len(c.find_elements(By.TAG_NAME, "rect")) >= s1 * s2 for c in charts)
    marker = browser.find_element(By.CSS_SELECTOR, ".oe-marker")
    canvas = browser.find_element(By.ID, "oe-frame")
    start = (marker.get_attribute("x"), marker.get_attribute("y"), canvas.get_attribute("data-frame"))
    assert start[2] == "0,7"  # the reference frame (row 2, column 1)
    browser.find_element(By.ID, "oe-slider2").send_keys(Keys.ARROW_RIGHT)
    browser.find_element(By.ID, "oe-slider").send_keys(Keys.ARROW_LEFT)
    end = (marker.get_attribute("x"), marker.get_attribute("y"), canvas.get_attribute("data-frame"))
    assert end[2] == "0,5" and float(end[0]) > float(start[0]) and float(end[1]) > float(start[1])
    assert "Δ rot_z = -90.0 deg, Δ spot_hue = 0.330 hue" == browser.find_element(By.ID, "oe-value").text


def test_report_first_screen_shows_the_verdict_and_no_table_overflows(browser, tmp_path):
    from selenium.webdriver.common.by import By

    runs = [rotation_run(tmp_path, f"sie_s{s}", "sie", "equi", skill=0.02, seed=s) for s in (0, 1)]
    runs.append(rotation_run(tmp_path, "vicreg", "vicreg", "full", skill=0.0))
    assert main(["report", *runs, "--out", str(tmp_path / "out")]) == 0
    browser.get((tmp_path / "out" / "report.html").as_uri())
    verdict = browser.find_element(By.ID, "verdict")
    assert "not above baseline" in verdict.text
    bottom = browser.execute_script("return arguments[0].getBoundingClientRect().bottom", verdict)
    assert bottom <= browser.execute_script("return window.innerHeight")  # on the first screen
    browser.save_screenshot(str(tmp_path / "report_first_screen.png"))
    browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
    widths = browser.execute_script(
        "return Array.from(document.querySelectorAll('table')).map(t => t.getBoundingClientRect().right)")
    assert len(widths) > 5 and max(widths) <= PAGE_WIDTH
    assert browser.execute_script("return document.documentElement.scrollWidth") <= PAGE_WIDTH
