"""Opens one page in headless Debian chromium and reports what the page found.

    python page.py URL [--timeout SECONDS] [--screenshot FILE]

The page does its own work (fetch, EventSource, …) and, when finished, sets
`window.__result` to any JSON value and `window.__done = true`. This prints
`JSON.stringify(window.__result)` on stdout and exits 0; the page's console and
errors go to stderr. It exits 1 if the page does not finish within the timeout.
Playwright drives the system chromium (ARBOR_TEST_CHROMIUM), never its own download.
"""

import argparse
import json
import os
import sys

from playwright.sync_api import sync_playwright


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--screenshot")
    args = ap.parse_args()
    chromium = os.environ.get("ARBOR_TEST_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page()
        page.on("console", lambda m: print(f"[console.{m.type}] {m.text}", file=sys.stderr))
        page.on("pageerror", lambda e: print(f"[pageerror] {e}", file=sys.stderr))
        page.goto(args.url)
        try:
            page.wait_for_function("window.__done === true", timeout=args.timeout * 1000)
        except Exception as e:  # a timeout: say what the page had so far
            print(f"page did not finish: {e}", file=sys.stderr)
            if args.screenshot:
                page.screenshot(path=args.screenshot, full_page=True)
            browser.close()
            return 1
        result = page.evaluate("JSON.stringify(window.__result === undefined ? null : window.__result)")
        if args.screenshot:
            page.screenshot(path=args.screenshot, full_page=True)
        browser.close()
    print(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
