"""The summary of benches/ab.sh: every round's figures and the median ratio B/A.

Reads lines `ROUND SIDE REPORT.json` on stdin (the arbor-bench JSON reports of one
`run --scenario append --pace closed --url …` each); arguments: A's commit, B's commit,
and optionally a threshold: exit 1 when the median B/A of arbor's fixed appends (the
harness's client) is below it.
"""

import json
import statistics
import sys

# (label, row predicate) of the figures compared, all in requests or events per second.
FIGURES = [
    ("HTTP floor, harness", lambda r: r["system"].startswith("HTTP floor") and "harness" in r["system"]),
    ("HTTP floor, wrk", lambda r: r["system"] == "HTTP floor (GET /healthz), wrk"),
    ("fixed appends, harness", lambda r: r["system"] == "arbor" and "instrument check" in r["case"]),
    ("fixed appends, wrk", lambda r: r["system"] == "arbor, wrk"),
    ("agents' appends, harness", lambda r: r["system"] == "arbor" and r["case"].startswith("closed loop")
     and "instrument check" not in r["case"]),
]
GATE = "fixed appends, harness"


def figures(path):
    with open(path, encoding="utf-8") as f:
        report = json.load(f)
    out = {}
    for label, pred in FIGURES:
        rows = [r for r in report["results"] if r["scenario"] == "append" and pred(r)]
        if rows and rows[0]["summary"]["count"] > 0 and not rows[0].get("error"):
            out[label] = rows[0]["summary"]["per_second"]
    return out


def main():
    sha_a, sha_b = sys.argv[1], sys.argv[2]
    gate = float(sys.argv[3]) if len(sys.argv) > 3 and sys.argv[3] else None
    rounds = {}
    for line in sys.stdin:
        parts = line.split()
        if len(parts) != 3:
            continue
        rnd, side, path = int(parts[0]), parts[1], parts[2]
        rounds.setdefault(rnd, {})[side] = figures(path)
    labels = [label for label, _ in FIGURES]
    print(f"A = {sha_a}, B = {sha_b} (per second; B/A > 1: B is faster)")
    print()
    print("| round | figure | A | B | B/A |")
    print("|---:|---|---:|---:|---:|")
    ratios = {label: [] for label in labels}
    for rnd in sorted(rounds):
        a, b = rounds[rnd].get("A", {}), rounds[rnd].get("B", {})
        for label in labels:
            if label in a and label in b and a[label] > 0:
                ratio = b[label] / a[label]
                ratios[label].append(ratio)
                print(f"| {rnd} | {label} | {a[label]:,.0f} | {b[label]:,.0f} | {ratio:.3f} |")
    print()
    print("| figure | rounds | median B/A | min | max |")
    print("|---|---:|---:|---:|---:|")
    for label in labels:
        v = ratios[label]
        if v:
            print(f"| {label} | {len(v)} | **{statistics.median(v):.3f}** | {min(v):.3f} | {max(v):.3f} |")
    if gate is not None:
        v = ratios[GATE]
        if not v:
            print(f"\nno '{GATE}' figure: cannot judge", file=sys.stderr)
            return 1
        m = statistics.median(v)
        if m < gate:
            print(f"\nREGRESSION: median B/A of {GATE} is {m:.3f} < {gate}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
