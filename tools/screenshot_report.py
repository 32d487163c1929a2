"""Open an HTML report (e.g. `keras-gpt explain`'s) in headless Chromium and
save a screenshot, so a person can check what the page shows.

    python tools/screenshot_report.py runs/demo/explain/report.html \
        --out report.png --height 4000

Needs Chromium (`apt-get install -y chromium`); not a test dependency. The
browser runs with networking in the background off and a throwaway
profile, so the screenshot shows only what the file itself holds.
"""

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def screenshot(report, out, width=1280, height=3000, browser=None,
               timeout=120):
    """Renders `report` at width x height CSS pixels into the PNG `out`."""
    report = Path(report).resolve()
    if not report.is_file():
        raise FileNotFoundError(f"No report at {report}.")
    browser = browser or next(
        (b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        raise FileNotFoundError("No Chromium found (looked for "
                                f"{', '.join(BROWSERS)}): apt-get install -y "
                                "chromium, or pass --browser.")
    out = Path(out).resolve()
    with tempfile.TemporaryDirectory(prefix="screenshot-") as profile:
        command = [
            browser, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--no-first-run",
            f"--user-data-dir={profile}", "--hide-scrollbars",
            f"--window-size={width},{height}",
            "--virtual-time-budget=3000",  # let the page's script run
            f"--screenshot={out}", report.as_uri()]
        done = subprocess.run(command, capture_output=True, text=True,
                              timeout=timeout)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{browser} failed ({done.returncode}): "
                           f"{done.stderr.strip()[-500:]}")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("report", help="The HTML file to open.")
    parser.add_argument("--out", help="The PNG to write (default: the "
                                      "report's path with .png).")
    parser.add_argument("--width", type=int, default=1280,
                        help="Viewport width in pixels (default 1280).")
    parser.add_argument("--height", type=int, default=3000,
                        help="Viewport height in pixels, i.e. how much of "
                             "the page is captured (default 3000).")
    parser.add_argument("--browser", help="Chromium executable (default: "
                                          "the first of "
                                          f"{', '.join(BROWSERS)} found).")
    args = parser.parse_args(argv)
    try:
        out = screenshot(args.report, args.out or Path(args.report)
                         .with_suffix(".png"), args.width, args.height,
                         args.browser)
    except (FileNotFoundError, RuntimeError,
            subprocess.TimeoutExpired) as error:
        print(f"screenshot_report: error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
