"""The HTTP benchmark's tables and chart (bench/run.py), from its results record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.peers import BASELINE_TWINS
from bench.scenarios import SCENARIOS


def _fmt(value: float | None, spec: str, width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value:>{width}{spec}}"


def peer_tables(results: dict[str, Any]) -> str:
    peers = results["peers"]
    if not peers:
        return ""
    out = []
    base = {k: next((p for p in peers if p["key"] == k and p["status"] == "ok"), None)
            for k in ("pounce-asyncio", "pounce-uvloop")}
    s = results["settings"]
    for name in s["scenarios"]:
        scenario = SCENARIOS[name]
        out.append(f"\n== {name}: {scenario.title}; {s['connections']} connections, "
                   f"{s['reps']} x {s['duration']} s after {s['warmup']} s warm-up ==")
        out.append(f"{'server':<38}{'req/s':>9}{'spread':>7}{'/aio':>6}{'/uvl':>6}{'req/cpu-s':>10}{'/aio':>6}"
                   f"{'p50 ms':>8}{'p99 ms':>8}{'errors':>7}{'RSS MB':>7}{'srv%':>5}{'wrk%':>6}{'oth%':>5}")
        ref: dict[str, float | None] = {}
        eff_ref = None
        for k, p in base.items():
            cell = p["scenarios"].get(name) if p else None
            ref[k] = cell["summary"]["rps"] if cell and "summary" in cell else None
            if k == "pounce-asyncio" and cell and "summary" in cell:
                eff_ref = cell["summary"]["rps_per_cpu_s"]
        for p in peers:
            label = p["label"]
            if p["status"] == "skipped":
                out.append(f"{label:<38}skipped: {p['reason']}")
                continue
            cell = p["scenarios"].get(name)
            if p["status"] != "ok" or cell is None or cell.get("status") != "ok" or "summary" not in cell:
                reason = (cell or {}).get("reason") or p.get("reason") or "not run"
                out.append(f"{label:<38}FAILED: {reason.splitlines()[0][:90]}")
                continue
            m = cell["summary"]
            ratios = [m["rps"] / r if r else None for r in (ref["pounce-asyncio"], ref["pounce-uvloop"])]
            eff = m["rps_per_cpu_s"] / eff_ref if eff_ref else None
            out.append(
                f"{label[:37]:<38}{m['rps']:>9,.0f}{m['rps_spread_pct']:>6.0f}%"
                f"{_fmt(ratios[0], '.2f', 6)}{_fmt(ratios[1], '.2f', 6)}"
                f"{m['rps_per_cpu_s']:>10,.0f}{_fmt(eff, '.2f', 6)}"
                f"{m['p50_ms']:>8.2f}{m['p99_ms']:>8.2f}{m['errors']:>7}{m['rss_peak_mb']:>7.1f}"
                f"{m['server_cpu_pct']:>5.0f}{m['wrk_cpu_pct']:>5.0f}{'*' if m['wrk_cpu_pct'] >= 90 else ' '}"
                f"{m['other_cpu_pct']:>5.0f}"
            )
        out.extend(baseline_lines(results, name))
    out.append("\n/aio, /uvl: req/s relative to pounce_worker with asyncio / with uvloop (>1: faster than pounce).\n"
               "req/cpu-s: requests per CPU-second of the server (req/s if it had its core to itself; steadier than "
               "req/s\nwhen other work competes for the CPU); /aio: that relative to pounce_worker (asyncio).")
    out.append("spread: (max-min)/median of the measured runs. RSS: peak summed VmRSS of master + workers "
               "under load.\nsrv%/wrk%/oth%: CPU used by the server tree / by wrk / by everything else on the "
               "machine (100 = one core; worst run).\n*: wrk used >= 90% of its core, so the client may be "
               "the bottleneck for that row.")
    if results["meta"].get("baseline"):
        out.append("tree/base: this run's pounce_worker ÷ the same row as of the baseline commit (>1: faster now); "
                   "tree÷X/base÷X:\neach of them ÷ server X (>1: pounce_worker faster than X). Same run, so their "
                   "quotient is tree/base.")
    return "\n".join(out)


def _summary(peer: dict[str, Any], scenario: str) -> dict[str, Any] | None:
    cell = peer.get("scenarios", {}).get(scenario) if peer["status"] == "ok" else None
    return cell.get("summary") if cell and cell.get("status") == "ok" else None


def baseline_comparison(results: dict[str, Any]) -> dict[str, Any]:
    """--baseline: per scenario and loop, this run's pounce_worker ÷ the baseline's, and each ÷ every other server.

    Measured in the same run, (tree ÷ peer) / (baseline ÷ peer) is tree ÷ baseline: the
    ratios to the peers are "no worse than before" exactly when tree ÷ baseline >= 1.
    """
    peers = results["peers"]
    by_key = {p["key"]: p for p in peers}
    others = [p for p in peers if not p["key"].startswith("pounce-")]
    comparison: dict[str, Any] = {}
    for name in results["settings"]["scenarios"]:
        for tree_key, base_key in BASELINE_TWINS.items():
            if tree_key not in by_key or base_key not in by_key:
                continue
            tree, base = _summary(by_key[tree_key], name), _summary(by_key[base_key], name)
            if tree is None or base is None:
                continue
            row: dict[str, Any] = {"vs": {}}
            for metric in ("rps", "rps_per_cpu_s"):
                row[metric] = tree[metric] / base[metric] if base[metric] else None
            for other in others:
                theirs = _summary(other, name)
                if theirs is not None:
                    row["vs"][other["key"]] = {
                        metric: {"tree": tree[metric] / theirs[metric], "baseline": base[metric] / theirs[metric]}
                        for metric in ("rps", "rps_per_cpu_s") if theirs[metric]}
            comparison.setdefault(name, {})[tree_key.rsplit("-", 1)[1]] = row
    return comparison


def baseline_lines(results: dict[str, Any], name: str) -> list[str]:
    """The --baseline block under a scenario's table: tree ÷ baseline, then both ÷ each other server."""
    baseline = results["meta"].get("baseline")
    rows = (baseline or {}).get("comparison", {}).get(name)
    if not rows:
        return []
    keys = list(dict.fromkeys(k for row in rows.values() for k in row["vs"]))
    width = max([11, *(len(k) + 2 for k in keys)])
    ref = results["settings"].get("ref")
    out = [f"-- {name}: pounce_worker {'@' + ref if ref else 'working tree'} (tree) against baseline "
           f"@{baseline['commit']} (base), same run --",
           f"{'loop':<9}{'metric':<11}{'tree/base':>10}" + "".join(f"{k:>{width}}" for k in keys)]
    for loop, row in rows.items():
        for metric, title in (("rps", "req/s"), ("rps_per_cpu_s", "req/cpu-s")):
            cells = []
            for k in keys:
                pair = row["vs"].get(k, {}).get(metric)
                cells.append(f"{pair['tree']:.2f}/{pair['baseline']:.2f}" if pair else "-")
            out.append(f"{loop:<9}{title:<11}{_fmt(row[metric], '.3f', 10)}" + "".join(f"{c:>{width}}" for c in cells))
    return out


def mode_table(results: dict[str, Any]) -> str:
    rows = results.get("modes") or []
    if not rows:
        return ""
    s = results["settings"]
    out = [f"\n== pounce_worker: N loops as threads of 1 process vs N processes "
           f"({s['mode_scenario']}, {s['connections']} connections; server pinned to "
           f"{'CPU ' + str(s['server_cpu']) if s['server_cpu'] is not None else 'no CPU'}) ==",
           f"{'loop':<9}{'loops':>6}{'mode':>11}{'procs':>7}{'req/s':>10}{'req/cpu-s':>10}{'p99 ms':>9}{'errors':>8}"
           f"{'idle RSS':>10}{'RSS MB':>8}{'PSS MB':>8}{'oth%':>6}"]
    for r in rows:
        head = f"{r['loop']:<9}{r['loops']:>6}{r['mode']:>11}"
        if r.get("status") != "ok" or "summary" not in r:
            out.append(f"{head}  FAILED: {str(r.get('reason', '')).splitlines()[0][:80]}")
            continue
        m, idle = r["summary"], r["idle"]
        out.append(f"{head}{idle['processes']:>7}{m['rps']:>10,.0f}{m['rps_per_cpu_s']:>10,.0f}{m['p99_ms']:>9.2f}"
                   f"{m['errors']:>8}"
                   f"{idle['rss_mb']:>10.1f}{m['rss_peak_mb']:>8.1f}{_fmt(m['pss_peak_mb'], '.1f', 8)}"
                   f"{m['other_cpu_pct']:>6.0f}")
    out.append("")
    for saving in results.get("mode_savings", []):
        out.append(
            f"{saving['loop']}, {saving['loops']} loops: threads use {saving['rss_saved_mb']:.1f} MB less RSS "
            f"({saving['rss_saved_pct']:.0f}%)"
            + (f", {saving['pss_saved_mb']:.1f} MB less PSS ({saving['pss_saved_pct']:.0f}%)"
               if saving.get("pss_saved_mb") is not None else "")
            + f"; threads/processes req/s = {saving['rps_ratio']:.2f}, req/cpu-s = {saving['eff_ratio']:.2f}"
        )
    out.append("RSS counts pages shared between forked workers once per process; PSS splits them, so it is "
               "the fairer total.")
    return "\n".join(out)


def features_table(results: dict[str, Any]) -> str:
    """--features: each opt-in feature's req/s and CPU cost against pounce_worker with them off."""
    rows = results.get("features") or []
    if not rows:
        return ""
    s = results["settings"]
    out = [f"\n== pounce_worker features: cost against features off ({s['feature_loop']}, 1 process, "
           f"{s['connections']} connections, wrk sends Accept-Encoding: gzip) =="]
    out.append(f"{'feature':<26}{'scenario':<10}{'req/s':>9}{'ratio':>7}{'req/cpu-s':>10}{'ratio':>7}"
               f"{'p99 ms':>8}{'bytes/resp':>11}{'errors':>7}{'oth%':>6}")
    base = next((r for r in rows if r["feature"] == "off"), None)
    for r in rows:
        for name in s["feature_scenarios"]:
            cell = r.get("cells", {}).get(name)
            head = f"{r['title'][:25]:<26}{name:<10}"
            if r.get("status") != "ok" or not cell or "summary" not in cell:
                reason = (cell or {}).get("reason") or r.get("reason") or "not run"
                out.append(f"{head}FAILED: {str(reason).splitlines()[0][:80]}")
                continue
            m = cell["summary"]
            ref = (base or {}).get("cells", {}).get(name, {}).get("summary")
            ratio = m["rps"] / ref["rps"] if ref and ref["rps"] else None
            eff = m["rps_per_cpu_s"] / ref["rps_per_cpu_s"] if ref and ref["rps_per_cpu_s"] else None
            out.append(f"{head}{m['rps']:>9,.0f}{_fmt(ratio, '.2f', 7)}{m['rps_per_cpu_s']:>10,.0f}"
                       f"{_fmt(eff, '.2f', 7)}{m['p99_ms']:>8.2f}{m['bytes_per_request']:>11,.0f}{m['errors']:>7}"
                       f"{m['other_cpu_pct']:>6.0f}")
    out.append("ratio: against 'features off' on the same scenario (1.00: no cost). bytes/resp: what wrk "
               "received per response, head included (compressed bodies are smaller).")
    return "\n".join(out)


def mode_savings(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    savings = []
    index = {(r["loop"], r["loops"], r["mode"]): r for r in rows if r.get("status") == "ok" and "summary" in r}
    for (loop, loops, mode), t in index.items():
        p = index.get((loop, loops, "processes"))
        if mode != "threads" or p is None:
            continue
        tm, pm = t["summary"], p["summary"]
        item: dict[str, Any] = {
            "loop": loop, "loops": loops,
            "rss_threads_mb": tm["rss_peak_mb"], "rss_processes_mb": pm["rss_peak_mb"],
            "rss_saved_mb": pm["rss_peak_mb"] - tm["rss_peak_mb"],
            "rss_saved_pct": 100.0 * (pm["rss_peak_mb"] - tm["rss_peak_mb"]) / pm["rss_peak_mb"],
            "rps_ratio": tm["rps"] / pm["rps"] if pm["rps"] else 0.0,
            "eff_ratio": tm["rps_per_cpu_s"] / pm["rps_per_cpu_s"] if pm["rps_per_cpu_s"] else 0.0,
        }
        if tm["pss_peak_mb"] is not None and pm["pss_peak_mb"] is not None:
            item["pss_saved_mb"] = pm["pss_peak_mb"] - tm["pss_peak_mb"]
            item["pss_saved_pct"] = 100.0 * item["pss_saved_mb"] / pm["pss_peak_mb"]
        savings.append(item)
    return savings


def chart(results: dict[str, Any], path: Path) -> str | None:
    """A PNG: req/s per server for each scenario, then threads vs processes. Returns why not, or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib)"
    names = results["settings"]["scenarios"]
    modes = [r for r in results.get("modes") or [] if r.get("status") == "ok" and "summary" in r]
    panels = len(names) + (2 if modes else 0)
    cols = 3 if panels > 4 else 2
    rows = (panels + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(6.5 * cols, 4.2 * rows), squeeze=False)
    flat = list(axes.flat)
    for ax, name in zip(flat, names, strict=False):
        labels, values, colors, effs = [], [], [], []
        for p in results["peers"]:
            cell = p.get("scenarios", {}).get(name)
            if p["status"] != "ok" or not cell or "summary" not in cell:
                continue
            labels.append(p["label"])
            values.append(cell["summary"]["rps"])
            effs.append(cell["summary"]["rps_per_cpu_s"])
            colors.append("tab:gray" if p.get("baseline") else "tab:orange" if p["key"].startswith("pounce")
                          else "tab:blue")
        ax.barh(labels[::-1], values[::-1], color=colors[::-1])
        ax.scatter(effs[::-1], range(len(effs)), marker="|", s=300, color="black", zorder=3,
                   label="req per CPU-second")
        if effs:
            ax.legend(fontsize=7, loc="lower right", markerscale=0.5)
        for y, v in enumerate(values[::-1]):
            ax.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
        ax.set_title(f"{name}: {SCENARIOS[name].title}", fontsize=10)
        ax.set_xlabel("requests/s (median); | = per CPU-second of the server")
        ax.tick_params(axis="y", labelsize=8)
        ax.margins(x=0.2)
    if modes:
        ax_rps, ax_mem = flat[len(names)], flat[len(names) + 1]
        groups = sorted({(r["loop"], r["mode"]) for r in modes})
        loops = sorted({r["loops"] for r in modes})
        width = 0.8 / max(1, len(groups))
        for gi, (loop, mode) in enumerate(groups):
            xs, rps, rss, pss, effs = [], [], [], [], []
            for li, n in enumerate(loops):
                r = next((r for r in modes if (r["loop"], r["mode"], r["loops"]) == (loop, mode, n)), None)
                if r is None:
                    continue
                xs.append(li + gi * width)
                rps.append(r["summary"]["rps"])
                effs.append(r["summary"]["rps_per_cpu_s"])
                rss.append(r["summary"]["rss_peak_mb"])
                pss.append(r["summary"]["pss_peak_mb"])
            ax_rps.bar(xs, rps, width, label=f"{mode} ({loop})")
            ax_rps.scatter(xs, effs, marker="_", s=900, color="black", zorder=3,
                           label="req per CPU-second" if gi == len(groups) - 1 else None)
            ax_mem.bar(xs, rss, width, label=f"{mode} ({loop}) RSS")
            if any(v is not None for v in pss):
                ax_mem.scatter(xs, pss, marker="_", s=900, color="black", zorder=3,
                               label="PSS" if gi == len(groups) - 1 else None)
        titles = ((ax_rps, "pounce_worker req/s, threads vs processes"),
                  (ax_mem, "pounce_worker peak MB: RSS bars, PSS ticks"))
        for ax, title in titles:
            ax.set_xticks([i + (len(groups) - 1) * width / 2 for i in range(len(loops))])
            ax.set_xticklabels([f"{n} loop{'s' if n > 1 else ''}" for n in loops])
            ax.set_title(title, fontsize=10)
            ax.legend(fontsize=7, markerscale=0.3)
    for ax in flat[panels:]:
        ax.axis("off")
    meta = results["meta"]
    git = meta.get("git") or {}
    code = (f"pounce_worker @{results['settings']['ref']}" if results["settings"].get("ref") else
            f"pounce_worker {git.get('head') or '?'}{'+changes' if git.get('dirty') else ''}")
    fig.suptitle(f"ASGI servers, 1 worker, {meta['python']} on {meta['cpu_model']}; {code} "
                 f"({results['settings']['tag']}, {meta['started'][:16]})", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None

