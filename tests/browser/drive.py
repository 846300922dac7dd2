"""Drives one headless Debian chromium page on behalf of a test, one command a line.

    python drive.py [--width W] [--height H]

Reads JSON commands from stdin, one per line, and answers each with one JSON line on
stdout: {"ok": true, "value": ...} or {"ok": false, "error": "..."}. The page's console
and errors go to stderr. Commands:

    {"op": "goto", "url": U}                      load U (waits for the load event)
    {"op": "wait", "js": EXPR, "timeout": S}      until EXPR is truthy; returns its value
    {"op": "eval", "js": EXPR}                    the value of EXPR (awaited if a promise)
    {"op": "click", "selector": CSS}              click the first match
    {"op": "fill", "selector": CSS, "text": T}    type T into an input
    {"op": "press", "key": K}                     a key on the focused element
    {"op": "viewport", "width": W, "height": H}   resize the page
    {"op": "screenshot", "path": P}               a PNG of the viewport
    {"op": "close"}                               close the browser and exit

Playwright drives the system chromium (ARBOR_TEST_CHROMIUM), never its own download.
"""

import argparse
import json
import os
import sys
import time

from playwright.sync_api import sync_playwright


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=800)
    args = ap.parse_args()
    chromium = os.environ.get("ARBOR_TEST_CHROMIUM", "/usr/bin/chromium")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--no-sandbox"]
        )
        page = browser.new_page(viewport={"width": args.width, "height": args.height})
        page.on("console", lambda m: print(f"[console.{m.type}] {m.text}", file=sys.stderr))
        page.on("pageerror", lambda e: print(f"[pageerror] {e}", file=sys.stderr))
        for line in sys.stdin:
            line = line.strip()
            if not line:
                continue
            try:
                cmd = json.loads(line)
                value = run(page, cmd)
                out = {"ok": True, "value": value}
            except Exception as e:  # the test reads the error and fails with it
                out = {"ok": False, "error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out), flush=True)
            if line and json.loads(line).get("op") == "close":
                break
        browser.close()
    return 0


def run(page, cmd):
    op = cmd["op"]
    timeout = float(cmd.get("timeout", 30)) * 1000
    if op == "goto":
        page.goto(cmd["url"], timeout=timeout)
        return None
    if op == "wait":
        # Polled with evaluate (the DevTools protocol), not wait_for_function: that one
        # evaluates strings inside the page, which the page's CSP rightly forbids.
        deadline = time.monotonic() + timeout / 1000
        while True:
            value = page.evaluate(cmd["js"])
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"{cmd['js']} still falsy after {timeout / 1000} s")
            page.wait_for_timeout(25)
    if op == "eval":
        return page.evaluate(cmd["js"])
    if op == "click":
        page.click(cmd["selector"], timeout=timeout)
        return None
    if op == "fill":
        page.fill(cmd["selector"], cmd["text"], timeout=timeout)
        return None
    if op == "press":
        page.keyboard.press(cmd["key"])
        return None
    if op == "viewport":
        page.set_viewport_size({"width": cmd["width"], "height": cmd["height"]})
        return None
    if op == "screenshot":
        page.screenshot(path=cmd["path"])
        return None
    if op == "close":
        return None
    raise ValueError(f"unknown op {op!r}")


if __name__ == "__main__":
    sys.exit(main())
