"""Screenshots of every dashboard page of an analysed run, as small PNGs (the README's figures).

    python examples/dashboard_screenshots.py runs/demo --feature 35 --steer 600 --out examples/figures

Starts `monosemantic view RUN --port 0` (127.0.0.1), drives Debian's chromium with Playwright (as the
browser tests do) through the text view, a feature page, its top example's document, the search,
the playground (steering `--steer` on `--prompt`, with the dose-response curve) and the run page,
and writes dashboard_PAGE.png: the top `--height` pixels of each page, quantised to 256 colours so
each stays small (~100 KB).
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
from PIL import Image
from playwright.sync_api import sync_playwright

CHROMIUM = "/usr/bin/chromium"


def start_dashboard(run_dir: str) -> tuple[subprocess.Popen, str]:
    """The `view` process and its URL, once it serves."""
    argv = [sys.executable, "-m", "monosemantic", "-q", "--threads", "1", "view", run_dir, "--port", "0"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if m := re.search(r"(http://127\.0\.0\.1:\d+)/", line):
            return proc, m.group(1)
    raise SystemExit(f"`{' '.join(argv)}` ended without serving (exit {proc.wait()})")


def save(page, path: Path, height: int) -> None:
    """The top `height` pixels of the page, quantised to a 256-colour palette."""
    png = page.screenshot(full_page=True)
    image = Image.open(io.BytesIO(png)).convert("RGB")
    image = image.crop((0, 0, image.width, min(height, image.height)))
    image.quantize(colors=256).save(path, optimize=True)
    print(f"{path}: {path.stat().st_size // 1024} KB", flush=True)


def steer_and_sweep(page, playground: tuple[int, float, str]) -> None:
    """Steer the playground's feature by `value` on `prompt`, then sweep the slider to the value (the curve)."""
    _, value, prompt = playground
    page.locator("#prompt").fill(prompt)
    page.locator("#edits .value").fill(str(value))
    page.locator("#edits .value").dispatch_event("change")
    page.click("#run")
    page.wait_for_selector("#after .continuation")
    page.locator("#alpha").evaluate(f"(s) => {{ s.max = {2 * value}; s.value = {value}; }}")
    page.locator("#alpha").dispatch_event("change")
    page.wait_for_selector("svg.dose-chart")


def shoot(url: str, feature: int, playground: tuple[int, float, str], text: str, out: Path, height: int) -> None:
    doc = httpx.get(f"{url}/api/feature/{feature}", timeout=120).json()["top_examples"][0]["doc"]
    pages = {
        "text_view": (f"/?text={quote(text)}", ".tok-col"),
        "feature_page": (f"/feature/{feature}", "svg.histogram"),
        "document_page": (f"/document/{doc}?feature={feature}", ".document"),
        "search": ("/search?q=%3D", "#results .feature-link"),
        "playground": (f"/playground?feature={playground[0]}", "#edits tbody tr"),
        "run_page": ("/run", "svg.curve-chart"),
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1200, "height": 800}, base_url=url)
        page.set_default_timeout(120_000)
        for name, (path, ready) in pages.items():
            page.goto(path)
            page.wait_for_selector(ready)
            if name == "playground":
                steer_and_sweep(page, playground)
            page.wait_for_load_state("networkidle")
            save(page, out / f"dashboard_{name}.png", height)
        browser.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="analysed run directory")
    parser.add_argument("--feature", type=int, default=35, help="the feature of the feature and document pages")
    parser.add_argument("--steer", type=int, default=600, help="the feature the playground steers")
    parser.add_argument("--alpha", type=float, default=0.5, help="its steering strength")
    parser.add_argument("--prompt", default="12 + 7 = ", help="the playground's prompt")
    parser.add_argument("--text", default="12 + 7 = 19, and 22 ÷ 7 ≈ 3.14", help="the text view's text")
    parser.add_argument("--out", default="examples/figures", help="directory for dashboard_PAGE.png")
    parser.add_argument("--height", type=int, default=1400, help="pixels of each page kept, from the top")
    args = parser.parse_args()
    proc, url = start_dashboard(args.run_dir)
    try:
        playground = (args.steer, args.alpha, args.prompt)
        shoot(url, args.feature, playground, args.text, Path(args.out), args.height)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
