"""Screenshot a page with headless Debian chromium through selenium, the network blocked (file:// only).

Usage: python benchmarks/screenshot.py dashboards/leaderboard.html benchmarks/results/dashboard.png [WIDTH]

Takes the whole page (its full scroll height), then shrinks the PNG to at most 1100 px wide so it stays small.
tests/test_benchmark.py uses :func:`offline_chromium` for its headless-browser test.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")


def offline_chromium(user_data_dir: str | Path, width: int = 1400, height: int = 1000):  # noqa: ANN201
    """A headless chromium WebDriver that cannot reach the network (a dead proxy and no DNS)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--disable-extensions", "--proxy-server=127.0.0.1:9",
                "--proxy-bypass-list=<-loopback>", '--host-resolver-rules=MAP * ~NOTFOUND',
                f"--user-data-dir={user_data_dir}", f"--window-size={width},{height}", "--hide-scrollbars"):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)


def screenshot(page: Path, out: Path, width: int = 1400, max_width: int = 1100) -> Path:
    """Load ``page`` from disk, wait for plotly to draw, and save a full-page PNG at ``out`` (256 colours,
    max-coverage quantization: it keeps the few saturated trace colours that median cut merges into grey)."""
    from selenium.webdriver.support.ui import WebDriverWait

    with tempfile.TemporaryDirectory() as profile:
        driver = offline_chromium(profile, width)
        try:
            driver.get(page.resolve().as_uri())
            WebDriverWait(driver, 60).until(
                lambda d: d.execute_script("return document.querySelectorAll('.js-plotly-plot .main-svg').length") > 0)
            height = driver.execute_script("return document.documentElement.scrollHeight")
            driver.set_window_size(width, min(int(height) + 40, 12000))
            out.parent.mkdir(parents=True, exist_ok=True)
            driver.save_screenshot(str(out))
        finally:
            driver.quit()
    try:  # shrink with matplotlib's PIL dependency when present
        from PIL import Image

        img = Image.open(out)
        if img.width > max_width:
            img = img.resize((max_width, round(img.height * max_width / img.width)), Image.LANCZOS)
        img = img.convert("RGB").quantize(colors=256, method=Image.Quantize.MAXCOVERAGE, dither=Image.Dither.NONE)
        img.save(out, optimize=True)
    except ImportError:
        pass
    return out


if __name__ == "__main__":
    args = sys.argv[1:]
    path = screenshot(Path(args[0]), Path(args[1]), *(int(a) for a in args[2:3]))
    print(f"{path} ({path.stat().st_size / 1024:.0f} KB)")
