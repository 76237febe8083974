"""Aggregates the raw runs, draws the charts and writes BENCHMARKS.md."""

import math
import os
import statistics
from pathlib import Path

PEER_ORDER = ["direct", "airlock", "airlock_h2up", "ceiling", "squid_bump", "mitmproxy", "squid_tunnel"]
LABELS = {
    "direct": "direct",
    "airlock": "airlock",
    "ceiling": "ceiling (bare interceptor)",
    "airlock_h2up": "airlock, h2 upstream",
    "squid_bump": "Squid bump",
    "mitmproxy": "mitmproxy",
    "squid_tunnel": "Squid plain tunnel",
}
COLORS = {
    "direct": "#7f7f7f",
    "airlock": "#1f77b4",
    "airlock_h2up": "#aec7e8",
    "ceiling": "#17becf",
    "squid_bump": "#ff7f0e",
    "mitmproxy": "#2ca02c",
    "squid_tunnel": "#c5b0d5",
}
HERE = Path(__file__).resolve().parent


def summarize(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def med(s):
    return None if not s else s["median"]


def good_runs(runs):
    return [r for r in runs if not r.get("failed") and not r.get("error")]


def agg_runs(entry, fields):
    runs = entry.get("runs", [])
    good = good_runs(runs)
    entry["failed_runs"] = len(runs) - len(good)
    for f in fields:
        entry[f] = summarize([r.get(f) for r in good])


def aggregate(results):
    wl = results.get("workloads", {})
    for group in ("keepalive", "h2"):
        for key, per_peer in wl.get(group, {}).items():
            for entry in per_peer.values():
                agg_runs(entry, ["rps", "p50_us", "p99_us", "cpu_us_per_req"])
    for entry in wl.get("newconn", {}).values():
        agg_runs(entry, ["rps", "p50_us", "p99_us", "cpu_us_per_req"])
    for entry in wl.get("first_conn", {}).values():
        entry["fresh_ms"] = summarize([r.get("ms") for r in entry.get("fresh", []) if not r.get("failed")])
        entry["again_ms"] = summarize([r.get("ms") for r in entry.get("again", []) if not r.get("failed")])
    for kind in ("download", "upload"):
        for entry in wl.get(kind, {}).values():
            agg_runs(entry, ["mb_s", "cpu_s_per_gb"])
            growth = [
                (r["rss_peak_kib"] - r["rss_before_kib"])
                for r in good_runs(entry.get("runs", []))
                if r.get("rss_peak_kib") is not None
            ]
            entry["rss_growth_kib_max"] = max(growth) if growth else None
    for e in ((wl.get("token_path") or {}).get("throughput") or {}).values():
        for x in e.values():
            agg_runs(x, ["rps", "p50_us", "p99_us", "cpu_us_per_req"])
    for v in ((wl.get("firewall") or {}).get("variants") or {}).values():
        for key in ("keepalive_c1", "keepalive_c16"):
            agg_runs(v[key], ["rps", "p50_us", "cpu_us_per_req"])
        agg_runs(v["download"], ["mb_s", "cpu_s_per_gb"])
    for v in ((wl.get("rules") or {}).get("variants") or {}).values():
        for key in ("keepalive_c1", "keepalive_c16"):
            agg_runs(v[key], ["rps", "p50_us", "cpu_us_per_req"])
    sc = wl.get("scaling") or {}
    for v in ((sc.get("firewall") or {}).get("variants") or {}).values():
        agg_runs(v["keepalive_c16"], ["rps", "p50_us", "cpu_us_per_req"])
        agg_runs(v["download"], ["mb_s", "cpu_s_per_gb"])
    for pt in (sc.get("population") or {}).get("points") or []:
        for key in ("c1", "spread"):
            agg_runs(pt[key], ["rps", "p50_us", "cpu_us_per_req"])
    churn = (sc.get("population") or {}).get("churn")
    if churn:
        agg_runs(churn["spread"], ["rps", "p50_us", "cpu_us_per_req"])
    results["targets"] = targets(results)


def ratio(a, b):
    if a is None or b is None or b == 0:
        return None
    return a / b


def get(results, *path):
    cur = results
    for p in path:
        if not isinstance(cur, dict) or p not in cur:
            return None
        cur = cur[p]
    return cur


def targets(results):
    wl = results.get("workloads", {})
    rows = []

    def add(name, target, value, met, shown, note=""):
        rows.append({"target": name, "goal": target, "value": value, "met": met, "shown": shown, "note": note})

    def ka(peer, key="c16", field="rps"):
        return med(get(wl, "keepalive", key, peer, field))

    r = ratio(ka("airlock"), ka("squid_bump"))
    add("Keep-alive, 16 conns vs Squid bump", "≥ 2.3×", r, None if r is None else r >= 2.3, fmt_x(r))
    r = ratio(ka("airlock"), ka("mitmproxy"))
    add("Keep-alive, 16 conns vs mitmproxy", "≥ 30×", r, None if r is None else r >= 30, fmt_x(r))
    p50 = ka("airlock", "c1", "p50_us")
    d50 = ka("direct", "c1", "p50_us")
    add("Keep-alive, 1 conn: p50", "≤ 110 µs (direct ~70 µs)", p50, None if p50 is None else p50 <= 110,
        f"{fmt_us(p50)} (direct {fmt_us(d50)}, +{fmt_us(None if p50 is None or d50 is None else p50 - d50)})")
    r = ratio(med(get(wl, "newconn", "airlock", "rps")), med(get(wl, "newconn", "squid_bump", "rps")))
    add("New connection per request vs Squid bump", "≥ 10×", r, None if r is None else r >= 10, fmt_x(r))
    for kind in ("download", "upload"):
        a = med(get(wl, kind, "airlock", "mb_s"))
        r = ratio(a, med(get(wl, kind, "squid_bump", "mb_s")))
        note = ("body swap on: a placeholder every 64 KiB, all swapped" if kind == "upload"
                else "response scrubbing on (the download direction of the body swap)")
        add(f"{kind.capitalize()} vs Squid bump", "≥ 2.5×", r, None if r is None else r >= 2.5, fmt_x(r), note)
        r = ratio(a, med(get(wl, kind, "direct", "mb_s")))
        add(f"{kind.capitalize()} vs direct", "≥ 0.9×", r, None if r is None else r >= 0.9, fmt_x(r), note)
        g = get(wl, kind, "airlock", "rss_growth_kib_max")
        add(f"{kind.capitalize()}: RSS growth during the transfer", "does not grow with the body (≤ 16 MiB)", g,
            None if g is None else g <= 16 * 1024, fmt_mib(g))
    h2 = med(get(wl, "h2", "c16", "airlock", "rps"))
    h1 = ka("airlock")
    r = ratio(h2, h1)
    add("HTTP/2 client side, 16 conns vs HTTP/1.1", "≥ 1× the HTTP/1.1 figure", r, None if r is None else r >= 1.0,
        f"{fmt_num(h2)} vs {fmt_num(h1)} req/s ({fmt_x(r)})")
    rest = get(results, "rss_kib", "airlock", "rest")
    split = get(results, "rss_split_rest_kib", "airlock") or {}
    add("RSS idle", "≤ 10 MiB", rest, None if rest is None else rest <= 10 * 1024, fmt_mib(rest),
        "`airlock up`: proxy and vault in one process" + (
            f"; private {fmt_mib(split.get('RssAnon'))}, file-backed {fmt_mib(split.get('RssFile'))}"
            if split else ""))
    per = get(wl, "idle", "airlock", "kib_per_conn")
    n = get(wl, "idle", "airlock", "opened")
    add("RSS per idle intercepted connection (TLS handshake done, no request yet)", "≤ 24 KiB", per,
        None if per is None else per <= 24, f"{fmt_num(per, 1)} KiB ({fmt_num(n)} held)")
    per = get(wl, "idle_after_request", "airlock", "kib_per_conn")
    n = get(wl, "idle_after_request", "airlock", "opened")
    add("RSS per idle intercepted connection (after one GET each)", "≤ 24 KiB", per,
        None if per is None else per <= 24, f"{fmt_num(per, 1)} KiB ({fmt_num(n)} held)")
    ceiling_targets(results, add)
    scaling_targets(results, add)
    counted_fw_targets(results, add)
    tp = wl.get("token_path") or {}
    v50 = med(get(tp, "throughput", "c1", "vault", "p50_us"))
    s50 = med(get(tp, "throughput", "c1", "static", "p50_us"))
    vr = med(get(tp, "throughput", "c16", "vault", "rps"))
    sr = med(get(tp, "throughput", "c16", "static", "rps"))
    if v50 is not None and s50 is not None and vr and sr:
        met = abs(v50 - s50) <= 0.1 * s50 and vr / sr >= 0.95
        add("Token path: vault cache hit vs a static secret", "no measurable latency (p50 within 10%, req/s ≥ 0.95×)",
            v50 - s50, met, f"p50 {fmt_us(v50)} vs {fmt_us(s50)}; 16 conns {fmt_x(vr / sr)} the req/s")
    else:
        add("Token path: vault cache hit vs a static secret", "no measurable latency", None, None, "not measured",
            tp.get("log_tail", "")[:100])
    st = tp.get("storm") or {}
    if st:
        ok = (st.get("statuses") or {}).get("200", 0)
        n = tp.get("storm_n")
        met = st.get("refreshes") == 1 and ok == n
        add(f"Token path: {fmt_num(n)}-way 401 storm", "exactly 1 refresh, all answered", st.get("refreshes"), met,
            f"{st.get('refreshes')} refresh(es), {fmt_num(ok)}/{fmt_num(n)} answered 200 in {st.get('seconds')} s")
    else:
        add("Token path: 1 000-way 401 storm", "exactly 1 refresh", None, None, "not measured")
    cg = results.get("callgrind") or {}
    if cg.get("swap", {}).get("ir_per_byte") is not None:
        add(f"callgrind: swapper on a {cg['body_mib']} MiB body", "instruction count recorded",
            cg["swap"]["ir_per_byte"], None,
            f"{cg['swap']['ir_per_byte']:.2f} instr/byte swap, {cg['scrub'].get('ir_per_byte', 0):.2f} scrub, "
            f"{cg.get('scrub1000', {}).get('ir_per_byte', 0):.2f} scrub guarding 1 000 tokens",
            "repeatable: compare across commits")
    else:
        add("callgrind: swapper on a 64 MiB body", "instruction count recorded", None, None,
            "not measured", cg.get("skipped", "")[:120])
    return rows


def ceiling_targets(results, add):
    """Issue 19: each figure as airlock ÷ the ceiling (a bare interceptor on
    the same crates, measured in the same run)."""
    wl = results.get("workloads", {})

    def both(*path):
        a = med(get(wl, *path[:-1], "airlock", path[-1]))
        c = med(get(wl, *path[:-1], "ceiling", path[-1]))
        return a, c, ratio(a, c)

    def higher_is_better(name, goal, limit, *path):
        a, c, r = both(*path)
        add(name, goal, r, None if r is None else r >= limit, f"{fmt_x(r)} ({fmt_num(a)} vs {fmt_num(c)})")

    def lower_is_better(name, goal, limit, *path):
        a, c, r = both(*path)
        add(name, goal, r, None if r is None else r <= limit, f"{fmt_x(r)} ({fmt_num(a, 1)} vs {fmt_num(c, 1)})")

    lower_is_better("Keep-alive, 1 conn: p50 ÷ ceiling", "≤ 1.2×", 1.2, "keepalive", "c1", "p50_us")
    lower_is_better("Keep-alive, 1 conn: proxy CPU per request ÷ ceiling", "≤ 1.2×", 1.2,
                    "keepalive", "c1", "cpu_us_per_req")
    higher_is_better("Keep-alive, 16 conns: req/s ÷ ceiling", "≥ 0.95×", 0.95, "keepalive", "c16", "rps")
    higher_is_better("HTTP/2 client side, 16 conns: req/s ÷ ceiling", "≥ 0.95×", 0.95, "h2", "c16", "rps")
    higher_is_better("New connection per request: conn/s ÷ ceiling", "≥ 1.0×", 1.0, "newconn", "rps")
    for kind in ("download", "upload"):
        higher_is_better(f"{kind.capitalize()}: MB/s ÷ ceiling (firewall on)", "≥ 0.9×", 0.9, kind, "mb_s")
    al = results.get("allocations") or {}
    a = get(al, "airlock_alloc", "allocs_per_req")
    c = get(al, "ceiling_alloc", "allocs_per_req")
    r = ratio(a, c)
    add("Allocations per keep-alive request ÷ ceiling", "≤ 1.5×", r, None if r is None else r <= 1.5,
        f"{fmt_x(r)} ({fmt_num(a, 1)} vs {fmt_num(c, 1)} per request)" if r is not None else
        (al.get("skipped") or "not measured")[:120])
    ins = results.get("instructions") or {}
    a = get(ins, "airlock_ir", "ir_per_req")
    c = get(ins, "ceiling_ir", "ir_per_req")
    r = ratio(a, c)
    add("Instructions per keep-alive request ÷ ceiling (callgrind)", "recorded", r, None,
        f"{fmt_x(r)} ({fmt_num(a)} vs {fmt_num(c)}); with an audit line per request (log level info): "
        f"{fmt_num(get(ins, 'airlock_ir_info', 'ir_per_req'))}" if r is not None else
        (ins.get("skipped") or "not measured")[:120],
        "repeatable: compare across commits")
    rest = get(results, "rss_kib", "airlock", "rest")
    add("RSS at rest (`airlock up`)", "≤ 8 MiB", rest, None if rest is None else rest <= 8 * 1024,
        f"{fmt_mib(rest)} (ceiling {fmt_mib(get(results, 'rss_kib', 'ceiling', 'rest'))})")
    a = get(wl, "idle_after_request", "airlock", "kib_per_conn")
    c = get(wl, "idle_after_request", "ceiling", "kib_per_conn")
    add("RSS per idle intercepted connection after a request", "≤ 24 KiB", a,
        None if a is None else a <= 24, f"{fmt_num(a, 1)} KiB (ceiling {fmt_num(c, 1)} KiB)")


# ---------------------------------------------------------------- how cost grows with work (issue 19)

SCALE_FLAT = 0.05  # per decade, of the smallest population's figure
SCALE_FW_COST = 0.05  # firewall on vs off


def slope_per_decade(xs, ys):
    """Least-squares slope of ys against log10(xs): change per tenfold."""
    pts = [(math.log10(x), y) for x, y in zip(xs, ys) if x and y is not None]
    if len(pts) < 2:
        return None
    mx = sum(p[0] for p in pts) / len(pts)
    my = sum(p[1] for p in pts) / len(pts)
    den = sum((p[0] - mx) ** 2 for p in pts)
    return None if den == 0 else sum((p[0] - mx) * (p[1] - my) for p in pts) / den


def scaling_slopes(pop):
    """{"c1"|"spread": (µs per decade, relative to the first point)} of CPU per request."""
    pts = pop.get("points") or []
    out = {}
    for key in ("c1", "spread"):
        xs = [p["sandboxes"] for p in pts]
        ys = [med(p[key].get("cpu_us_per_req")) for p in pts]
        s = slope_per_decade(xs, ys)
        base = ys[0] if ys else None
        out[key] = (s, None if s is None or not base else s / base)
    return out


def paired_ratio(on, off, field):
    """The median over rounds of on ÷ off, each round's two runs measured back
    to back (bench.scaling_firewall); the ratio of the medians when the
    rounds cannot be paired (an older results.json)."""
    pairs = [(a.get(field), b.get(field)) for a, b in zip(on.get("runs") or [], off.get("runs") or [])
             if good_runs([a, b]) == [a, b]]
    ratios = [a / b for a, b in pairs if a is not None and b]
    if ratios and len(ratios) == len(on.get("runs") or []) == len(off.get("runs") or []):
        return statistics.median(ratios)
    return ratio(med(on.get(field)), med(off.get(field)))


def one_download_bytes(variants):
    """The size of one download of the firewall workload (a round's figure
    may sum two of them)."""
    run = ((variants[next(iter(variants))].get("download") or {}).get("runs") or [{}])[0]
    return ((run.get("transfers") or [run])[0]).get("bytes", 0)


def scaling_fw_costs(fw, kind):
    """[(tokens, on ÷ off − 1 of CPU, on ÷ off of throughput)] for keep-alive or download."""
    v = fw.get("variants") or {}
    key, cpu, rate = (("keepalive_c16", "cpu_us_per_req", "rps") if kind == "keepalive"
                      else ("download", "cpu_s_per_gb", "mb_s"))
    rows = []
    for n in fw.get("tokens") or []:
        on, off = v.get(f"fw_scale_on_{n}", {}).get(key, {}), v.get(f"fw_scale_off_{n}", {}).get(key, {})
        c = paired_ratio(on, off, cpu)
        r = paired_ratio(on, off, rate)
        rows.append((n, None if c is None else c - 1, r))
    return rows


def counted_fw_costs(fc):
    """{"keepalive"|"download": [(tokens, on ÷ off − 1)]} from the counted
    firewall workload, each side's least window."""
    v = fc.get("variants") or {}
    out = {}
    for kind, field in (("keepalive", "ir_per_req"), ("download", "ir_per_byte")):
        rows = []
        for n in fc.get("tokens") or []:
            on = (v.get(f"fw_scale_on_{n}") or {}).get(field) or []
            off = (v.get(f"fw_scale_off_{n}") or {}).get(field) or []
            rows.append((n, min(on) / min(off) - 1 if on and off else None))
        out[kind] = rows
    return out


def counted_fw_targets(results, add):
    counted = counted_fw_costs(results.get("firewall_counted") or {})
    for kind, unit in (("keepalive", "instructions/request, 1 conn"), ("download", "instructions/byte")):
        rows = counted.get(kind) or []
        costs = [c for _, c in rows if c is not None]
        if not rows:
            continue
        add(f"Firewall cost on {'keep-alive' if kind == 'keepalive' else 'download'} vs firewall off, counted "
            f"({unit}), by tokens the sandbox holds", f"≤ {SCALE_FW_COST:.0%}",
            max(costs) if costs else None, None if len(costs) < len(rows) else max(costs) <= SCALE_FW_COST,
            "; ".join(f"{fmt_num(n)}: {'?' if c is None else f'{c:+.1%}'}" for n, c in rows),
            "the same two gateways under callgrind: the process's instructions, the least of "
            f"{(results.get('firewall_counted') or {}).get('windows', 3)} windows; the kernel's work not counted")


def scaling_targets(results, add):
    sc = get(results, "workloads", "scaling") or {}
    if not sc:
        return
    pop = sc.get("population") or {}
    pts = pop.get("points") or []
    span = (f"{fmt_num(pts[0]['sandboxes'])} → {fmt_num(pts[-1]['sandboxes'])} sandboxes, "
            f"{fmt_num(pts[0]['bindings'])} → {fmt_num(pts[-1]['bindings'])} bindings") if pts else ""
    for key, what in (("spread", f"{pop.get('measured_sandboxes', 4)} sandboxes × 4 conns"), ("c1", "1 conn")):
        s, rel = scaling_slopes(pop).get(key, (None, None))
        add(f"Shared gateway: proxy CPU per keep-alive request as the population grows ({what})",
            f"flat: slope ≤ {SCALE_FLAT:.0%} of the smallest population's figure per decade",
            rel, None if rel is None else rel <= SCALE_FLAT,
            "not measured" if s is None else f"{s:+.1f} µs per decade ({rel:+.1%})", span)
    fw = sc.get("firewall") or {}
    for kind, unit in (("keepalive", "CPU/request, 16 conns"), ("download", "CPU/GB")):
        rows = scaling_fw_costs(fw, kind)
        costs = [c for _, c, _ in rows if c is not None]
        shown = "; ".join(f"{fmt_num(n)}: {'?' if c is None else f'{c:+.0%}'}" for n, c, _ in rows)
        add(f"Firewall cost on {'keep-alive' if kind == 'keepalive' else 'download'} vs firewall off "
            f"({unit}), by tokens the sandbox holds", f"≤ {SCALE_FW_COST:.0%}",
            max(costs) if costs else None, None if not costs or len(costs) < len(rows) else max(costs) <= SCALE_FW_COST,
            shown or "not measured",
            "shared gateway, `scrub_responses = false` as the baseline; both on an HTTP/1.1 upstream; "
            "median over rounds of each round's on ÷ off (A B B A)")
    idle = pop.get("idle") or {}
    n = idle.get("asked") or idle.get("count")
    if n:
        held = min(idle.get("opened") or 0, idle.get("alive_after_probe") or 0)
        add(f"Shared gateway: {fmt_num(n)} idle connections held", f"all {fmt_num(n)} held", held, held >= n,
            f"{fmt_num(held)} over {fmt_num(idle.get('sandboxes'))} sandboxes, "
            f"{fmt_num(idle.get('kib_per_conn'), 1)} KiB/conn",
            "one GET each with its sandbox's placeholder" + (f"; {idle['capped']}" if idle.get("capped") else ""))


def scaling_section(sc, w, results_counted=None):
    w("## 9. How cost grows with work (issue 19): a shared gateway")
    w("")
    if not sc:
        w("Not measured in this run.")
        w("")
        counted_fw_section(results_counted, w)
        return
    pop = sc.get("population") or {}
    pts = pop.get("points") or []
    w(f"`airlock up` with `require_auth = true` (vault on SQLite, in the process). The population is made "
      f"through the admin API (`POST /v1/secrets`, `POST /v1/sandboxes`, 4 at a time): tenant *k* owns "
      f"sandboxes {pop.get('tenant_size', 100)}·k to {pop.get('tenant_size', 100)}·k + "
      f"{pop.get('tenant_size', 100) - 1} and {pop.get('per_sandbox', 10)} secrets, its own "
      f"`API_TOKEN` for bench.test and fillers bound to other hosts; every sandbox binds all "
      f"{pop.get('per_sandbox', 10)}, so bindings = 10 × sandboxes. At each size, keep-alive GETs speak as "
      f"sandboxes spread over the population (first, last and between; `Proxy-Authorization` per sandbox, "
      f"each with its own placeholder): one connection as the first, then "
      f"{pop.get('measured_sandboxes', 4)} sandboxes × 4 connections at once. CPU per request = the "
      "proxy's utime+stime over the run ÷ every response.")
    w("")
    if pop.get("log_tail") and not pts:
        w(f"Not measured: {pop['log_tail'][:300]}")
        w("")
    if pts:
        w("| sandboxes | bindings | tenants | made in | RSS | 1 conn: req/s | p50 | CPU µs/req | "
          "spread: req/s | p50 | CPU µs/req |")
        w("|---|---|---|---|---|---|---|---|---|---|---|")
        for p in pts:
            c1, sp = p["c1"], p["spread"]
            w(f"| {fmt_num(p['sandboxes'])} | {fmt_num(p['bindings'])} | {fmt_num(p['tenants'])} | "
              f"{p['populate_s']:.1f} s | {fmt_mib(p.get('rss_kib'))} | {fmt_stat(c1.get('rps'))} | "
              f"{fmt_stat(c1.get('p50_us'), fmt_us)} | {fmt_stat(c1.get('cpu_us_per_req'), lambda v: f'{v:.0f}')} | "
              f"{fmt_stat(sp.get('rps'))} | {fmt_stat(sp.get('p50_us'), fmt_us)} | "
              f"{fmt_stat(sp.get('cpu_us_per_req'), lambda v: f'{v:.0f}')} |")
        w("")
        slopes = scaling_slopes(pop)
        parts = []
        for key, what in (("c1", "1 connection"), ("spread", "spread")):
            s, rel = slopes.get(key, (None, None))
            if s is not None:
                parts.append(f"{what} **{s:+.1f} µs per decade** ({rel:+.1%} of the smallest population's figure)")
        if parts:
            w("Slope of proxy CPU per request against log10(sandboxes) (least squares over the medians): "
              + "; ".join(parts) + ".")
            w("")
    churn = pop.get("churn") or {}
    if churn and pts:
        last = pts[-1]["spread"]
        a, b = med(churn["spread"].get("cpu_us_per_req")), med(last.get("cpu_us_per_req"))
        w(f"**While sandboxes are being created** ({churn.get('rate_per_s')} a second through the admin API, "
          f"{fmt_num(churn.get('created'))} in all, on top of {fmt_num(pts[-1]['sandboxes'])}): the spread run "
          f"again gives {fmt_stat(churn['spread'].get('rps'))} req/s, p50 "
          f"{fmt_stat(churn['spread'].get('p50_us'), fmt_us)}, **{fmt_stat(churn['spread'].get('cpu_us_per_req'), lambda q: f'{q:.0f}')} "
          f"µs CPU/request** ({fmt_x(ratio(a, b))} the quiet figure). The creations' own CPU (admin API, "
          "sealing, SQLite; same process) is measured alone just before each run, "
          f"{fmt_num(1e3 * statistics.median(churn.get('cpu_s_per_create') or [0]), 1)} ms per sandbox, and "
          "subtracted.")
        w("")
    fw = sc.get("firewall") or {}
    v = fw.get("variants") or {}
    if v:
        w(f"**Tokens a sandbox holds, firewall on vs off.** Two more shared gateways, populated alike (one tenant "
          f"with {fmt_num(fw.get('secrets'))} secrets; one sandbox per token count, binding that many), one with "
          "`scrub_responses = false`. The firewall guards every token the sandbox could obtain in every "
          "spelling, so its pattern set grows with the count. Keep-alive GETs (16 connections) and a "
          f"{fmt_mib(one_download_bytes(v) / 1024)} download, "
          "interleaved, both gateways on an HTTP/1.1 upstream (`upstream_protocol = \"http1\"`: the firewall "
          "the only difference). Each round measures on and off twice, in the order A B B A (the first "
          "alternating by round; keep-alive windows of half the duration), and a side's figure for the "
          "round comes from the sums of its two windows, so a drift of the machine that is linear over the "
          "round cancels out; the cost in the targets is the median over rounds of each round's on ÷ off, "
          "the ratios in the table are of the medians.")
        w("")
        w("| tokens | firewall | keep-alive req/s | p50 | CPU µs/req | download MB/s | CPU s/GB |")
        w("|---|---|---|---|---|---|---|")
        for n in fw.get("tokens") or []:
            on, off = v.get(f"fw_scale_on_{n}"), v.get(f"fw_scale_off_{n}")
            for name, x in (("off", off), ("on", on)):
                if not x:
                    continue

                def cell(key, field, f=fmt_num, x=x, name=name):
                    text = fmt_stat(x[key].get(field), f)
                    b = med((off or {}).get(key, {}).get(field))
                    if name == "on" and med(x[key].get(field)) and b:
                        text += f" ({fmt_x(med(x[key].get(field)) / b)})"
                    return text

                w(f"| {fmt_num(n)} | {name} | {cell('keepalive_c16', 'rps')} | "
                  f"{cell('keepalive_c16', 'p50_us', fmt_us)} | "
                  f"{cell('keepalive_c16', 'cpu_us_per_req', lambda q: f'{q:.0f}')} | "
                  f"{cell('download', 'mb_s')} | {cell('download', 'cpu_s_per_gb', lambda q: f'{q:.2f}')} |")
        w("")
    counted_fw_section(results_counted, w)
    idle = pop.get("idle") or {}
    if idle:
        probe = idle.get("probe") or {}
        w(f"**Idle connections**: {fmt_num(idle.get('opened'))}/{fmt_num(idle.get('count'))} intercepted "
          f"connections opened (CONNECT with connection *i* speaking as sandbox *i* mod "
          f"{fmt_num(idle.get('sandboxes'))}, TLS, one GET with that sandbox's placeholder) in "
          f"{fmt_num(idle.get('seconds'), 1)} s and held; {fmt_num(idle.get('alive_after_probe'))} still open "
          f"after a 1 s probe (req/s {fmt_num(probe.get('rps'))}, p50 {fmt_us(probe.get('p50_us'))}); RSS "
          f"{fmt_mib(idle.get('rss_before_kib'))} → {fmt_mib(idle.get('rss_held_kib'))} "
          f"({fmt_num(idle.get('kib_per_conn'), 1)} KiB per connection, its sandbox's first request included)."
          + (f" Asked for {fmt_num(idle.get('asked'))}: {idle['capped']}." if idle.get("capped") else ""))
        w("")


def counted_fw_section(fc, w):
    v = (fc or {}).get("variants") or {}
    if not v:
        if (fc or {}).get("skipped"):
            w(f"**The firewall's cost, counted:** not measured ({fc['skipped']}).")
            w("")
        return
    w(f"**The firewall's cost, counted.** The same two gateways (populated alike, then started again under "
      f"callgrind on the same data): instructions the process runs per keep-alive request (one connection, "
      f"{fmt_num(fc.get('requests'))} requests a window) and per byte of a "
      f"{fmt_mib((fc.get('download_bytes') or 0) / 1024)} download (a range of nginx's zeros), the least of "
      f"{fc.get('windows', 3)} windows each: what a gateway does per span of wall time (the ledger's list and "
      "the host policy read again every 30 s) falls into some windows, and under valgrind's slowdown into far "
      "more of them than per request of real traffic. Counts do not move with the machine's load, where the "
      "timed pairs above spread by tens of percent; the kernel's work (the same on and off) is not in them.")
    w("")
    w("| tokens | keep-alive: off | on | cost | download, a byte: off | on | cost |")
    w("|---|---|---|---|---|---|---|")
    costs = counted_fw_costs(fc)
    for (n, ka), (_, dl) in zip(costs["keepalive"], costs["download"]):
        on, off = v.get(f"fw_scale_on_{n}") or {}, v.get(f"fw_scale_off_{n}") or {}

        def least(x, field, digits):
            return fmt_num(min(x[field]), digits) if x.get(field) else "–"

        w(f"| {fmt_num(n)} | {least(off, 'ir_per_req', 0)} | {least(on, 'ir_per_req', 0)} | "
          f"{'–' if ka is None else f'{ka:+.1%}'} | {least(off, 'ir_per_byte', 3)} | "
          f"{least(on, 'ir_per_byte', 3)} | {'–' if dl is None else f'{dl:+.1%}'} |")
    w("")


# ---------------------------------------------------------------- formatting


def fmt_num(v, digits=0):
    if v is None:
        return "–"
    if digits == 0:
        return f"{v:,.0f}".replace(",", " ")
    return f"{v:,.{digits}f}".replace(",", " ")


def fmt_us(v):
    if v is None:
        return "–"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    return f"{v:.0f} µs"


def fmt_x(v):
    if v is None:
        return "–"
    return f"{v:.2f}×" if v < 10 else f"{v:.1f}×"


def fmt_mib(kib):
    if kib is None:
        return "–"
    return f"{kib / 1024:.1f} MiB"


def fmt_stat(s, f=fmt_num):
    if not s:
        return "–"
    if s["n"] == 1:
        return f(s["median"])
    return f"{f(s['median'])} ({f(s['min'])}–{f(s['max'])})"


def fmt_ms(v):
    return "–" if v is None else f"{v:.2f}"


def peers_of(per_peer):
    return [p for p in PEER_ORDER if p in per_peer]


def ratio_cells(per_peer, field, higher_is_better=True):
    """airlock vs each comparison peer."""
    a = med(get(per_peer, "airlock", field))
    cells = []
    for p in ("squid_bump", "mitmproxy", "direct"):
        b = med(get(per_peer, p, field))
        r = ratio(a, b) if higher_is_better else ratio(b, a)
        cells.append(fmt_x(r))
    return cells


def status_note(entry):
    if entry.get("unsupported"):
        return f"not supported: {entry['unsupported'][:90]}"
    if entry.get("failed_runs"):
        bad = [r for r in entry.get("runs", []) if r.get("failed") or r.get("error")]
        return f"{entry['failed_runs']} failed run(s): {(bad[0].get('failed') or bad[0].get('error'))[:120]}"
    return ""


# ---------------------------------------------------------------- charts


def charts(results, out):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    out.mkdir(parents=True, exist_ok=True)
    wl = results.get("workloads", {})
    made = []

    def bars(ax, groups, per_group, field, ylabel, title, log=False, scale=1.0):
        """groups: list of (label, per_peer dict)."""
        peers = [p for p in PEER_ORDER if any(p in g for _, g in groups)]
        width = 0.8 / max(len(peers), 1)
        for i, p in enumerate(peers):
            xs, ys, lo, hi = [], [], [], []
            for gi, (_, g) in enumerate(groups):
                s = get(g, p, field)
                if not s:
                    continue
                xs.append(gi + (i - (len(peers) - 1) / 2) * width)
                ys.append(s["median"] * scale)
                lo.append((s["median"] - s["min"]) * scale)
                hi.append((s["max"] - s["median"]) * scale)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=LABELS[p], color=COLORS[p])
            for x, y in zip(xs, ys):
                ax.annotate(f"{y:,.0f}" if y >= 10 else f"{y:.2g}", (x, y), ha="center", va="bottom",
                            fontsize=6, rotation=90, xytext=(0, 2), textcoords="offset points")
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([label for label, _ in groups])
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        if log:
            ax.set_yscale("log")
            lows = [get(g, p, field)["median"] * scale for _, g in groups for p in peers
                    if get(g, p, field) and get(g, p, field)["median"] > 0]
            if lows and min(lows) > 0:
                ax.set_ylim(bottom=10 ** math.floor(math.log10(min(lows))))
            ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
        ax.grid(axis="y", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)

    foot = "median of {} runs, bars = min–max; {}".format(
        results["meta"]["reps"], results["meta"]["started_utc"])

    if wl.get("keepalive"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        groups = [(f"{k[1:]} conn", v) for k, v in wl["keepalive"].items()]
        bars(axes[0], groups, None, "rps", "requests/s (log)", "Keep-alive HTTPS GET with header swap", log=True)
        bars(axes[1], groups, None, "p50_us", "p50 latency, µs (log)", "p50 latency", log=True)
        fig.text(0.01, 0.01, foot, fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / "keepalive.png", dpi=110)
        plt.close(fig)
        made.append("keepalive.png")

    if wl.get("h2"):
        fig, ax = plt.subplots(figsize=(8, 4.5))
        groups = [("HTTP/1.1, 16 conns", wl.get("keepalive", {}).get("c16", {}))]
        groups += [("HTTP/2, 16 conns" if k == "c16" else "HTTP/2, 1 conn × 16 streams",
                    {p: e for p, e in v.items() if not e.get("unsupported")}) for k, v in wl["h2"].items()]
        bars(ax, groups, None, "rps", "requests/s (log)", "HTTP/2 client side vs HTTP/1.1", log=True)
        fig.text(0.01, 0.01, foot, fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / "http2.png", dpi=110)
        plt.close(fig)
        made.append("http2.png")

    if wl.get("newconn"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        bars(axes[0], [("8 concurrent", wl["newconn"])], None, "rps", "connections/s (log)",
             "New connection per request", log=True)
        fc = wl.get("first_conn", {})
        bars(axes[1], [("never-seen host", {p: {"v": e.get("fresh_ms")} for p, e in fc.items()}),
                       ("same host again", {p: {"v": e.get("again_ms")} for p, e in fc.items()})],
             None, "v", "ms, CONNECT + TLS + GET", "First connection to a host")
        fig.text(0.01, 0.01, foot, fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / "newconn.png", dpi=110)
        plt.close(fig)
        made.append("newconn.png")

    if wl.get("download"):
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        groups = [(k, wl[k]) for k in ("download", "upload") if k in wl]
        size = results["meta"]["transfer_bytes"] >> 20
        bars(axes[0], groups, None, "mb_s", "MB/s", f"{size} MiB transfer")
        bars(axes[1], [(k, {p: e for p, e in v.items() if p != "direct"}) for k, v in groups], None,
             "cpu_s_per_gb", "proxy CPU s per GB", "Proxy CPU per GB")
        fig.text(0.01, 0.01, foot, fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / "transfer.png", dpi=110)
        plt.close(fig)
        made.append("transfer.png")

    rss = results.get("rss_kib", {})
    if rss:
        fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
        stages = ["rest", "keepalive", "h2", "newconn", "download", "upload"]
        groups = [(s, {p: {"v": {"median": v[s] / 1024, "min": v[s] / 1024, "max": v[s] / 1024, "n": 1}}
                       for p, v in rss.items() if s in v}) for s in stages]
        groups = [g for g in groups if g[1]]
        bars(axes[0], groups, None, "v", "RSS, MiB (log)", "Proxy RSS at rest and after each workload", log=True)
        idle = wl.get("idle", {})
        bars(axes[1], [(f"{results['meta']['idle_connections']} idle", {
            p: {"v": {"median": e["kib_per_conn"], "min": e["kib_per_conn"], "max": e["kib_per_conn"], "n": 1}}
            for p, e in idle.items() if e.get("kib_per_conn") is not None})], None, "v", "KiB per connection",
            "RSS per idle intercepted connection")
        fig.text(0.01, 0.01, results["meta"]["started_utc"], fontsize=7)
        fig.tight_layout(rect=(0, 0.03, 1, 1))
        fig.savefig(out / "memory.png", dpi=110)
        plt.close(fig)
        made.append("memory.png")
    return made


# ---------------------------------------------------------------- markdown


def firewall_section(fw, w):
    """Side by side: the response firewall off, and on with 1, 10 and 100 tokens."""
    w("## 7. The response firewall's cost")
    w("")
    variants = fw.get("variants") or {}
    if not variants:
        w("Not measured in this run.")
        w("")
        return
    w("The same build started four times, each with its own listener: `scrub_responses = false`, and the "
      "firewall on while the sandbox holds 1, 10 and 100 tokens (every token is guarded in every spelling: "
      "raw, JSON, percent, base64/base64url at each alignment, hex). Keep-alive GETs with the placeholder, "
      "and the large download, interleaved round-robin, every variant on an HTTP/1.1 upstream "
      "(`upstream_protocol = \"http1\"`: the firewall the only difference). Ratios are against the firewall off.")
    w("")
    off = variants.get("fw_off") or {}
    w("| variant | keep-alive 1 conn: req/s | p50 | CPU µs/req | keep-alive 16 conns: req/s | CPU µs/req "
      "| download MB/s | CPU s/GB |")
    w("|---|---|---|---|---|---|---|---|")
    for name, v in variants.items():
        label = f"firewall {'on' if v['firewall'] else 'off'}, {v['tokens']} token{'s' if v['tokens'] > 1 else ''}"

        def cell(key, field, f=fmt_num):
            x = v[key].get(field)
            base = med((off.get(key) or {}).get(field))
            text = fmt_stat(x, f)
            if name != "fw_off" and med(x) and base:
                text += f" ({fmt_x(med(x) / base)})"
            return text

        w(f"| {label} | {cell('keepalive_c1', 'rps')} | {cell('keepalive_c1', 'p50_us', fmt_us)} | "
          f"{cell('keepalive_c1', 'cpu_us_per_req')} | {cell('keepalive_c16', 'rps')} | "
          f"{cell('keepalive_c16', 'cpu_us_per_req')} | {cell('download', 'mb_s')} | "
          f"{cell('download', 'cpu_s_per_gb', lambda x: f'{x:.2f}')} |")
    w("")


RULES_LABELS = {
    "rules_none": "no request rules",
    "rules_10": "10 request rules (the last one matches)",
    "narrowed": "a narrowed placeholder (allow GET /**, 24 h)",
}


def rules_section(rs, w):
    """Issue 17: request rules and caveat checks on the keep-alive workload."""
    w("## Request rules and narrowed placeholders on the keep-alive path")
    w("")
    variants = rs.get("variants") or {}
    if not variants:
        w("Not measured in this run.")
        w("")
        return
    w("The same build started three times: the binding without rules, with ten rules (first match wins; the "
      "request matches the tenth), and a client sending a narrowed placeholder (its HMAC chain verified and "
      "its caveats checked on every request). Keep-alive GETs, interleaved round-robin. Ratios are against "
      "no rules.")
    w("")
    base = variants.get("rules_none") or {}
    w("| variant | keep-alive 1 conn: req/s | p50 | CPU µs/req | keep-alive 16 conns: req/s | CPU µs/req |")
    w("|---|---|---|---|---|---|")
    for name, v in variants.items():
        def cell(key, field, f=fmt_num):
            x = v[key].get(field)
            b = med((base.get(key) or {}).get(field))
            text = fmt_stat(x, f)
            if name != "rules_none" and med(x) and b:
                text += f" ({fmt_x(med(x) / b)})"
            return text

        w(f"| {RULES_LABELS.get(name, name)} | {cell('keepalive_c1', 'rps')} | "
          f"{cell('keepalive_c1', 'p50_us', fmt_us)} | {cell('keepalive_c1', 'cpu_us_per_req')} | "
          f"{cell('keepalive_c16', 'rps')} | {cell('keepalive_c16', 'cpu_us_per_req')} |")
    w("")


def markdown(results, chart_files, report_dir, charts_abs):
    m = results["meta"]
    wl = results.get("workloads", {})
    charts_dir = Path(os.path.relpath(charts_abs, report_dir))
    L = []
    w = L.append
    w("# airlock benchmarks")
    w("")
    w("airlock beside the proxies a platform team would pick instead, measured in one run on one machine "
      "(issue 8). Only ratios from the same run mean anything: absolute numbers move between runs and machines.")
    w("")
    w(f"- Run: **{m['mode']}** mode, started {m['started_utc']}, took {m['elapsed_s']:.0f} s; "
      f"each figure is the median of {m['reps']} run(s) with (min–max); oha runs last {m['duration_s']:g} s each.")
    w(f"- Command: `bench/run{' --smoke' if m['mode'] == 'smoke' else ''}` (see [bench/README.md](bench/README.md)); "
      f"raw numbers: `bench/results.json`, written by the run beside this file (generated, not kept in git).")
    w(f"- Peers in this run: {', '.join(m['peers'])}.")
    w("")
    if results.get("failures"):
        w("> **airlock failed checks in this run:**")
        for f in results["failures"]:
            w(f"> - {f.splitlines()[0]}")
        w("")

    w("## Targets (issues 8 and 19) against this run")
    w("")
    w("| target | goal | this run | met? | note |")
    w("|---|---|---|---|---|")
    for t in results.get("targets", []):
        met = {True: "**met**", False: "**missed**", None: "n/a"}[t["met"]]
        w(f"| {t['target']} | {t['goal']} | {t['shown']} | {met} | {t['note']} |")
    w("")
    analysis = HERE / "ANALYSIS.md"
    if m["mode"] == "full" and analysis.exists():
        w(analysis.read_text().strip())
        w("")

    w("## Machine and tools")
    w("")
    mi = m["machine"]
    w(f"- {mi['nproc']} cores, {mi['cpu_model']}, {mi['memory']} RAM, kernel {mi['kernel']}, {mi['os']}; "
      f"open-files limit {mi['nofile_limit']} (a hard limit here: no process may hold more than that many sockets).")
    for k, v in m["versions"].items():
        w(f"- {k}: `{v}`")
    if m.get("build"):
        w(f"- airlock and the ceiling built alike: {m['build']}.")
    w("- Everything runs on loopback on the same 2 cores: client, proxy and upstream compete for CPU, "
      "as in the reference figures.")
    if m.get("loadavg_start"):
        w(f"- Load average (1/5/15 min) at the start {' / '.join(m['loadavg_start'])}, at the end "
          f"{' / '.join(m.get('loadavg_end', ['?']))}: anything else running on the machine shows up as noise.")
    w("")

    w("## Setup")
    w("")
    w(f"- **Upstream**: nginx, 1 worker, TLS (leaf for `{'bench.test'}` and `*.bench.test` signed by a bench CA, "
      "P-256), HTTP/1.1 and h2 (ALPN), 20-byte body at `/`, a sparse file at `/big` for downloads, "
      "WebDAV `PUT /upload` (body spooled to tmpfs, then renamed) for uploads. It answers **403 unless "
      "`Authorization: Bearer real-secret-value-123`**, so a missed swap shows up as a non-2xx status; every "
      "airlock run is checked for 100% 2xx.")
    w("- **direct**: the client talks to nginx itself and sends the real secret (the floor).")
    up = m.get("airlock_upstream", "h1")
    w("- **airlock**: `airlock up` (release build, `AIRLOCK_LOG=warn`, so audit lines are filtered out), a "
      "`[[secret]]` bound to `bench.test` and `*.bench.test` with `swap_in = [\"header\", \"basic\", \"body\"]`, "
      "`[resolve]` overrides to nginx, `upstream_ca` = the bench CA. The client sends "
      "`Authorization: Bearer miosa-tok-AAAA…`. " + (
          "**airlock's upstream is nginx's HTTP/1.1-only listener** (port 18444, same server block): against a "
          "listener that offers h2, airlock forwards an HTTP/1.1 client's `Host` header next to `:authority` and "
          "nginx 1.22 answers 400 to every request (see *Interop* below). The row *airlock, h2 upstream* in the "
          "HTTP/2 table uses the h2 listener with h2 clients, which works."
          if up == "h1" else "airlock's upstream is nginx's h2-capable listener."))
    w("- **Squid bump**: Debian `squid-openssl`, `-N` (no daemon), `workers 1`, `ssl_bump peek step1` / "
      "`bump all`, `generate-host-certificates=on` with its own P-256 CA, `request_header_access Authorization "
      "deny all` + `request_header_replace Authorization Bearer …` (Squid cannot replace only the placeholder, "
      "so it replaces the whole header), `tls_outgoing_options cafile=` the bench CA, `hosts_file` for the names, "
      "no cache, no access log, `read_ahead_gap 1 MB`. RSS and CPU include its certificate helper.")
    w("- **mitmproxy**: `mitmdump` with [bench/mitm_addon.py](bench/mitm_addon.py) (swaps the placeholder in "
      "`requestheaders`, resolves `*.bench.test` to 127.0.0.1), `ssl_verify_upstream_trusted_ca` = the bench CA, "
      "`stream_large_bodies=1m` (streams big bodies instead of buffering them), `connection_strategy=lazy` "
      "(needed for the 10 000-connection test: eager mode opens one upstream socket per client and two sockets "
      "per connection exceed the 20 000 open-file hard limit).")
    w("- **Squid plain tunnel** (reference only): the same Squid without ssl_bump; the client sends the real "
      "secret through a byte tunnel.")
    w("- All peers verify nginx's certificate against the bench CA. Proxy CPU is utime+stime from "
      "`/proc/PID/stat` (whole process tree) before and after each run; RSS is from `/proc/PID/statm`.")
    w("")
    w("Exact command lines (airlock's; the other peers differ only in `-x`/`--cacert`, direct uses "
      "`--connect-to bench.test:18443:127.0.0.1:18443` and the real secret):")
    w("")
    w("```sh")
    for k, v in results.get("commands", {}).items():
        w(f"# {k}")
        w(v)
    w("```")
    w("")

    def table_rates(per_peer, unit, extra_latency=True, cpu=True):
        head = f"| peer | {unit} | "
        sep = "|---|---|"
        if extra_latency:
            head += "p50 | p99 | "
            sep += "---|---|"
        if cpu:
            head += "proxy CPU µs/req | "
            sep += "---|"
        head += "airlock is × this | note |"
        sep += "---|---|"
        w(head)
        w(sep)
        a = med(get(per_peer, "airlock", "rps"))
        for p in peers_of(per_peer):
            e = per_peer[p]
            row = f"| {LABELS[p]} | {fmt_stat(e.get('rps'))} | "
            if extra_latency:
                row += f"{fmt_stat(e.get('p50_us'), fmt_us)} | {fmt_stat(e.get('p99_us'), fmt_us)} | "
            if cpu:
                row += f"{fmt_stat(e.get('cpu_us_per_req'), lambda v: f'{v:.0f}') if p != 'direct' else '–'} | "
            r = ratio(a, med(e.get("rps"))) if p != "airlock" else None
            row += f"{fmt_x(r) if r else ''} | {status_note(e)} |"
            w(row)
        w("")

    interop = results.get("interop_h2_upstream") or {}
    if interop:
        w("## Interop: airlock in front of an upstream that offers h2")
        w("")
        w("One GET through airlock to `h2.bench.test`, which airlock dials at nginx's h2-capable listener "
          "(nginx 1.22.1 from Debian 12, ALPN h2 + http/1.1):")
        w("")
        w("| client | status | verdict |")
        w("|---|---|---|")
        for client, e in interop.items():
            verdict = "ok" if e.get("ok") else "**fails**"
            w(f"| curl {client} | {e.get('status')} | {verdict} |")
        w("")
        if any(not e.get("ok") for e in interop.values()):
            w("nginx logs `client sent duplicate host header` for the failing case: airlock's pooled client "
              "speaks h2 to nginx and sends the HTTP/1.1 client's `Host` header as a regular header beside "
              "`:authority`; nginx (before 1.25) refuses that with 400. HTTP/2 clients send no `Host`, so "
              "they pass. Every HTTP/1.1 client (curl --http1.1, Python requests, git, most SDKs) gets 400 "
              "from such an upstream. Fix: drop `Host` from the forwarded request (the pooled client derives "
              "`Host` for HTTP/1.1 and `:authority` for h2 from the URI), after checking it matches the "
              "CONNECT host as airlock already does.")
            w("")

    if wl.get("keepalive"):
        w("## 1. Keep-alive HTTPS GETs with a header swap")
        w("")
        w("`oha -z {d}s -c N` with `Authorization: Bearer <placeholder>`; one TLS connection per client "
          "connection, reused for every request.".format(d=f"{m['duration_s']:g}"))
        w("")
        for key, per_peer in wl["keepalive"].items():
            c = key[1:]
            w(f"**{c} connection{'s' if c != '1' else ''}**")
            w("")
            table_rates(per_peer, "req/s")
            a = med(get(per_peer, "airlock", "p50_us"))
            d = med(get(per_peer, "direct", "p50_us"))
            if a is not None and d is not None:
                w(f"airlock adds **{fmt_us(a - d)}** to the p50 over direct at {c} connection(s).")
                w("")
        if "keepalive.png" in chart_files:
            w(f"![keep-alive]({charts_dir / 'keepalive.png'})")
            w("")

    if wl.get("h2"):
        w("## HTTP/2 on the client side")
        w("")
        w("`oha --http2` works through `-x` (CONNECT, then TLS with ALPN h2 inside the tunnel). "
          "`-c 16 -p 1` is 16 h2 connections with one stream each (compare with the HTTP/1.1 16-connection row); "
          "`-c 1 -p 16` multiplexes 16 streams on one connection. Squid does not offer h2 to bumped clients.")
        w("")
        for key, per_peer in wl["h2"].items():
            w("**" + ("16 connections × 1 stream" if key == "c16" else "1 connection × 16 streams") + "**")
            w("")
            table_rates(per_peer, "req/s")
        if "http2.png" in chart_files:
            w(f"![http2]({charts_dir / 'http2.png'})")
            w("")

    if wl.get("newconn"):
        w("## 2. New connection per request")
        w("")
        w("`oha --disable-keepalive -c 8`: every request pays CONNECT + the client-side TLS handshake "
          "(+ the proxy's upstream handshake unless it pools upstream connections).")
        w("")
        table_rates(wl["newconn"], "connections/s")
        fc = wl.get("first_conn", {})
        if fc:
            w("**First connection to a never-seen host name** (a fresh `freshN.bench.test` per run: the proxy "
              "mints a leaf), then a second connection to the same name (cached leaf). Wall time of TCP + "
              "CONNECT + TLS + one GET + response, from a Python client (its own TLS cost included, same for all).")
            w("")
            w("| peer | never-seen host, ms | same host again, ms | note |")
            w("|---|---|---|---|")
            for p in peers_of(fc):
                e = fc[p]
                note = "tunnel: no leaf to mint" if p == "squid_tunnel" else ("no proxy" if p == "direct" else "")
                bad = [r for r in e.get("fresh", []) + e.get("again", []) if r.get("failed")]
                if bad:
                    note += f" {len(bad)} failed: {bad[0]['failed'][:80]}"
                w(f"| {LABELS[p]} | {fmt_stat(e.get('fresh_ms'), fmt_ms)} | {fmt_stat(e.get('again_ms'), fmt_ms)} | {note} |")
            w("")
        if "newconn.png" in chart_files:
            w(f"![new connections]({charts_dir / 'newconn.png'})")
            w("")

    if wl.get("download"):
        size = m["transfer_bytes"]
        w(f"## 3. {size >> 20} MiB download and upload")
        w("")
        w("curl (`--http1.1`, one transfer at a time; uploads chunked, because Squid bump drops large "
          "`Content-Length` uploads mid-body, see below) through each peer, after one untimed 64 MiB download "
          "per peer; MB/s = body bytes / curl's `time_total`. "
          "**Body swap on**: the upload is `text/plain` with a placeholder every 64 KiB; airlock "
          "(`swap_in` includes `body`) swaps each one while it streams (checked: nginx's stored copy holds "
          "the real secret that many times and no placeholder), and the download passes airlock's response "
          "scrubber (`scrub_responses`, the default). The mitmproxy addon swaps streamed request bodies chunk "
          "by chunk; Squid cannot rewrite bodies (that takes an ICAP/eCAP service) and only replaces the header. "
          "RSS growth = peak RSS sampled every 25 ms during the transfer minus RSS before it.")
        w("")
        for kind in ("download", "upload"):
            per_peer = wl.get(kind, {})
            w(f"**{kind}**")
            w("")
            w("| peer | MB/s | proxy CPU s/GB | max RSS growth | airlock is × this | note |")
            w("|---|---|---|---|---|---|")
            a = med(get(per_peer, "airlock", "mb_s"))
            for p in peers_of(per_peer):
                e = per_peer[p]
                r = ratio(a, med(e.get("mb_s"))) if p != "airlock" else None
                cpu = fmt_stat(e.get("cpu_s_per_gb"), lambda v: f"{v:.2f}") if p != "direct" else "–"
                w(f"| {LABELS[p]} | {fmt_stat(e.get('mb_s'))} | {cpu} | {fmt_mib(e.get('rss_growth_kib_max'))} | "
                  f"{fmt_x(r) if r else ''} | {status_note(e)} |")
            w("")
        if "transfer.png" in chart_files:
            w(f"![transfers]({charts_dir / 'transfer.png'})")
            w("")

    if wl.get("idle"):
        n = m["idle_connections"]
        w(f"## 4. {n} concurrent idle intercepted connections")
        w("")
        w("[bench/idle_hold.py](bench/idle_hold.py) (Python asyncio, 64 handshakes in flight) opens CONNECT + "
          "a verified TLS handshake with the proxy's minted leaf and then holds each connection without sending "
          "anything. Per connection = (RSS with all held − RSS just before) / connections held. While they are "
          "held, a 1-connection keep-alive oha run (1 s) checks the proxy still answers. Measured once per peer.")
        w("")
        w("| peer | held | open time | RSS before → held → after close | KiB/conn | probe while held: req/s, p50 | closed by proxy | note |")
        w("|---|---|---|---|---|---|---|---|")
        rows = [(p, wl["idle"][p]) for p in PEER_ORDER if p in wl["idle"]]
        if wl.get("idle_after_request", {}).get("airlock"):
            rows.insert(1, ("airlock (after one GET each)", wl["idle_after_request"]["airlock"]))
        for p, e in rows:
            probe = e.get("probe") or {}
            note = e.get("incomplete", "") or (probe.get("failed") or probe.get("error") or "")
            w(f"| {LABELS.get(p, p)} | {fmt_num(e.get('opened'))} | {fmt_num(e.get('seconds'), 1)} s | "
              f"{fmt_mib(e.get('rss_before_kib'))} → {fmt_mib(e.get('rss_held_kib'))} → {fmt_mib(e.get('rss_after_close_kib'))} | "
              f"{fmt_num(e.get('kib_per_conn'), 1)} | {fmt_num(probe.get('rps'))}, {fmt_us(probe.get('p50_us'))} | "
              f"{fmt_num(e.get('closed_by_proxy'))} | {str(note)[:120]} |")
        w("")

    tp = wl.get("token_path") or {}
    w("## 5. Token path (the vault)")
    w("")
    if tp.get("throughput") or tp.get("storm"):
        w("A second airlock (`airlock up` with its vault, SQLite, on loopback) with a provider whose token "
          "endpoint is a mock OAuth server (TLS, in the driver) and a machine account (client credentials), "
          "plus a static `[[secret]]` on the same host. nginx answers 401 to `vault-tok-1`, the first token "
          "the vault gets, and 200 to later ones.")
        w("")
        st = tp.get("storm") or {}
        if st:
            w(f"**401 storm**: {fmt_num(st.get('opened'))} intercepted connections opened first "
              f"(CONNECT + TLS), then one GET with the vault placeholder on each at once. Every GET meets "
              f"the expired token: airlock must refresh once and replay them all.")
            w("")
            w("| GETs | answered | refreshes at the provider | time until all answered |")
            w("|---|---|---|---|")
            w(f"| {fmt_num(tp.get('storm_n'))} | {st.get('statuses')} | **{st.get('refreshes')}** | {st.get('seconds')} s |")
            w("")
        thr = tp.get("throughput") or {}
        if thr:
            w("**Cache hit**: keep-alive GETs through the same airlock to the same host, with the vault "
              "placeholder (token from the proxy's cache) or the static secret's placeholder, interleaved.")
            w("")
            w("| connections | credential | req/s | p50 | p99 | proxy CPU µs/req |")
            w("|---|---|---|---|---|---|")
            for key, e in thr.items():
                for name in ("vault", "static"):
                    x = e.get(name, {})
                    w(f"| {key[1:]} | {'vault token (cache hit)' if name == 'vault' else 'static secret'} | "
                      f"{fmt_stat(x.get('rps'))} | {fmt_stat(x.get('p50_us'), fmt_us)} | "
                      f"{fmt_stat(x.get('p99_us'), fmt_us)} | {fmt_stat(x.get('cpu_us_per_req'), lambda v: f'{v:.0f}')} |")
            w("")
        cold = tp.get("cold") or []
        if cold:
            firsts = [c[0]["ms"] for c in cold]
            later = [g["ms"] for c in cold for g in c[1:]]
            w(f"**Cold cache**: a freshly started airlock (token in the vault's store, nothing cached), one "
              f"intercepted connection, three GETs in a row: the first asks the vault, the others hit the cache. "
              f"First GET {fmt_stat(summarize(firsts), fmt_ms)} ms, later GETs {fmt_stat(summarize(later), fmt_ms)} ms "
              f"({len(cold)} restarts).")
            w("")
    else:
        w("Not measured in this run" + (f": {tp.get('log_tail', '')[:300]}" if tp else "."))
        w("")
    firewall_section(wl.get("firewall") or {}, w)
    rules_section(wl.get("rules") or {}, w)
    scaling_section(wl.get("scaling") or {}, w, results.get("firewall_counted"))
    cg = results.get("callgrind") or {}
    w("## callgrind: the body swapper on a fixed body")
    w("")
    if cg.get("swap", {}).get("ir") is not None:
        w(f"[bench/swapcount](bench/swapcount/src/main.rs) feeds a {cg['body_mib']} MiB text body in 16 KiB chunks "
          f"(a placeholder every {cg['placeholder_every'] // 1024} KiB) through airlock's streaming request-body "
          "swapper (`body_swap::streaming`) and, separately, its response firewall (`firewall::Firewall::body`); "
          "`copy` drains the same body untouched and is subtracted; `scrub1000` is the firewall guarding "
          "1 000 tokens (the measured one and 999 others), less the instructions that build it (counted on "
          "an empty body). Instruction counts do not depend on the "
          "machine's load, so they compare across commits.")
        w("")
        w(f"`{cg['command']}`")
        w("")
        w("| mode | instructions | minus copy | per byte |")
        w("|---|---|---|---|")
        for mode in ("copy", "swap", "scrub", "scrub1000"):
            x = cg.get(mode, {})
            per = x.get("ir_per_byte")
            w(f"| {mode} | {fmt_num(x.get('ir'))} | {fmt_num(x.get('net_ir'))} | "
              f"{'' if per is None else f'{per:.3f}'} |")
        w("")
        v = cg.get("verify") or {}
        w(f"Check (native run): {v.get('tokens_out')} tokens swapped in, {fmt_num(v.get('output_bytes'))} bytes out.")
        w("")
    else:
        w(f"Not measured in this run: {cg.get('skipped', 'not run')}.")
        w("")

    rss = results.get("rss_kib", {})
    if rss:
        w("## 6. Proxy memory and CPU per request")
        w("")
        stages = ["start", "rest", "keepalive", "h2", "newconn", "download", "upload"]
        w("RSS (MiB) of the proxy process tree: at start, at rest (after one sanity request), and after each "
          "workload (all peers run side by side, so each saw the same workloads in the same order). The idle "
          "test runs on a fresh process per peer: see its table for RSS with the connections held.")
        w("")
        w("| peer | " + " | ".join(stages) + " |")
        w("|---|" + "---|" * len(stages))
        for p in PEER_ORDER:
            if p in rss:
                w(f"| {LABELS[p]} | " + " | ".join(fmt_mib(rss[p].get(s)).replace(' MiB', '') for s in stages) + " |")
        w("")
        w("Proxy CPU per request (µs of utime+stime, median): ")
        w("")
        w("| peer | keep-alive 1 conn | keep-alive 16 conns | keep-alive 256 conns | new connection per request |")
        w("|---|---|---|---|---|")
        for p in PEER_ORDER:
            if p == "direct" or p not in rss:
                continue
            cells = [med(get(wl, "keepalive", k, p, "cpu_us_per_req")) for k in ("c1", "c16", "c256")]
            cells.append(med(get(wl, "newconn", p, "cpu_us_per_req")))
            w(f"| {LABELS[p]} | " + " | ".join("–" if c is None else f"{c:.0f}" for c in cells) + " |")
        w("")
        if "memory.png" in chart_files:
            w(f"![memory]({charts_dir / 'memory.png'})")
            w("")

    prof = results.get("profile")
    if prof and not prof.get("skipped"):
        w("## Profile: airlock under keep-alive, 16 connections")
        w("")
        w(f"`perf record -F 499 -g -p <airlock>` during a separate 16-connection run "
          f"({fmt_num(prof.get('rps_under_perf'))} req/s under perf), self time:")
        w("")
        w("```")
        w("# by binary")
        for line in prof.get("by_dso", [])[:8]:
            w(line)
        w("# by symbol (all)")
        for line in prof.get("by_symbol", [])[:25]:
            w(line)
        w("# inside the airlock binary (percent of all samples)")
        for line in prof.get("airlock_only", [])[:25]:
            w(line)
        w("```")
        w("")
    elif prof:
        w(f"Profile skipped: {prof['skipped']}")
        w("")

    if results.get("notes") or results.get("airlock_log_tail"):
        w("## Problems seen in this run")
        w("")
        for n in results.get("notes", []):
            w(f"- {n.splitlines()[0][:300]}")
        if results.get("airlock_log_tail"):
            w("- airlock's log (warn level) at the end of the run:")
            w("")
            w("```")
            w(results["airlock_log_tail"][-3000:])
            w("```")
        w("")

    w("## Reproduce")
    w("")
    w("```sh")
    w("bench/run            # full run: installs peers, builds airlock, ~40 min on 2 cores, rewrites this file")
    w("bench/run --smoke    # ~1.5 min: 1 short run each, small sizes; exits non-zero if airlock mis-proxies")
    w("BENCH_SRC=/path/to/exported/tree bench/run   # measure another source tree (e.g. `git archive` of a commit)")
    w("python3 bench/bench.py --report-only bench/results.json   # redraw charts and rewrite this file")
    w("```")
    w("")
    return "\n".join(L) + "\n"
