"""The summary rows of docs/BENCHMARKS.md from the end-to-end benchmark's results (``bench/e2e.py table``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def table(args: argparse.Namespace) -> None:
    """The e2e rows of docs/BENCHMARKS.md's summary table from ``e2e.json`` (markdown on stdout)."""
    d = json.loads(Path(args.results).read_text())
    naive_d = json.loads(Path(args.naive_results).read_text()) if args.naive_results else d
    srv, nv = d.get(args.server_key, {}), naive_d.get("naive_1080p", {})
    cmd = "`python bench/e2e.py server`"
    rows = []
    one = srv.get("one_client_1080p", {}).get("latency", {})
    base = nv.get("latency", {})
    for q, target in (("p50", 150), ("p99", 300)):
        mine, theirs = one.get(f"{q}_ms"), base.get(f"{q}_ms")
        ratio = f"{theirs / mine:.1f}x faster" if mine and theirs else "-"
        rows.append(
            (
                cmd + " + `naive`",
                f"identify, 1080p photo, 1M-face gallery, 1 client: {q} {mine} ms",
                f"{theirs} ms",
                ratio,
                f"<= {target} ms; >= 4x",
                "yes" if mine and mine <= target and theirs and theirs / mine >= 4 else "no",
            )
        )
    for label, key in (("16 clients", f"clients_{args.clients}_480p"),):
        c = srv.get(key, {})
        lat = c.get("latency", {})
        rows.append(
            (
                cmd,
                f"{label}, 640x480 photos: {c.get('faces_per_s')} faces/s, p50/p95/p99 {lat.get('p50_ms')}/"
                f"{lat.get('p95_ms')}/{lat.get('p99_ms')} ms, {c.get('errors')} errors of {c.get('requests')}",
                "-",
                "-",
                "0 errors; report faces/s and spread",
                "yes" if c.get("errors") == 0 else "no",
            )
        )
    cs, idle = srv.get("cold_start_s"), srv.get("idle_rss_mib")
    rows.append((cmd, f"cold start to /readyz 200: {cs} s", "-", "-", "<= 15 s", "yes" if cs and cs <= 15 else "no"))
    rows.append(
        (
            cmd,
            f"RSS at idle (1M faces loaded): {idle} MiB",
            "-",
            "-",
            "<= 1.5 GB",
            "yes" if idle and idle <= 1430 else "no",
        )
    )
    soak = d.get("soak10k", {}).get("soak")
    if soak:
        rows.append(
            (
                "`python bench/e2e.py server --soak 10000`",
                f"RSS after {soak['requests']} requests vs after {soak['warmup_requests']}: "
                f"{soak['rss_warmup_mib']} -> {soak['rss_end_mib']} MiB ({soak['rss_growth_pct']:+.1f}%)",
                "-",
                "-",
                "<= 5%",
                "yes" if soak["rss_growth_pct"] <= 5 else "no",
            )
        )
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
