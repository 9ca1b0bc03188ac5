"""Render a run (the dict run.py stores as results.json) as results.md and a throughput chart.

Every figure printed here comes from the run; the only constants are the
targets the project set itself (TARGETS, ANCHOR_REF_NUMBA).
"""

from __future__ import annotations

import math
from pathlib import Path

OURS = ["gradcomp value_and_vjp", "gradcomp vjp"]
ONE_THREAD = "gradcomp value_and_vjp, 1 thread"
FORWARD = "gradcomp forward"
HEADLINE = "gradcomp value_and_vjp"
"""Targets judge the fused forward+VJP call: it computes and writes what the peers compute."""
PEERS = ["JAX jit(vmap(vjp))", "torch eager", "SymPy lambdify(cse)", "SymEngine Lambdify llvm"]
JAX = "JAX jit(vmap(vjp))"
MAIN_N = "100000"

ANCHOR_REF_NUMBA = {"seed": 580, "rosenbrock32": 21, "fk6": 11.5, "lj6": 9.5, "mlp8x16x4": 1.8, "chain12": 3.5}
"""Mpts/s to beat at N = 1e5 on this machine kind (shared/bench/ANCHORS.md, 'Numbers to beat')."""

TARGETS = {
    "jax_geomean": 3.0, "latency_seed_us": 3.0, "latency_us": 5.0, "latency_vs_jax": 4.0,
    "op_ratio": 3.0, "time_ratio": 2.5, "warm_s": 0.5,
}
"""Project targets; 'warm well under 1 s beyond imports' is read as < 0.5 s."""

CORRECTNESS_FLAG = 1e-9


def fmt(value, digits: int = 3) -> str:
    """Three significant digits; '—' for missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, str):
        return value
    if value == 0:
        return "0"
    if abs(value) >= 10 ** digits or abs(value) < 1e-3:
        return f"{value:.{digits - 1}e}"
    return f"{value:.{digits}g}"


def table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) if not isinstance(c, str) else c for c in row) + " |" for row in rows]
    return lines + [""]


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "**MISS**")


def mpts(case: dict, label: str, n: str = MAIN_N):
    entry = case["throughput"].get(n, {}).get(label)
    return entry["mpts"] if entry else None


def best_peer(case: dict, n: str = MAIN_N) -> tuple[str | None, float | None]:
    rates = {label: mpts(case, label, n) for label in PEERS if mpts(case, label, n) is not None}
    if not rates:
        return None, None
    label = max(rates, key=rates.get)
    return label, rates[label]


def ratio(a, b):
    return a / b if a is not None and b else None


def time_ratio(case: dict, n: str = MAIN_N):
    """Measured seconds of fused value_and_vjp over forward alone, same batch."""
    fused, forward = mpts(case, HEADLINE, n), mpts(case, FORWARD, n)
    return ratio(forward, fused)


def cold_warm(case: dict) -> tuple:
    compile_ = case["compile"]
    total = {name: probe.get("total_s") for name, probe in compile_.items()}
    return total.get("gradcomp cold"), total.get("gradcomp warm"), total.get("JAX cold")


def geomean(values: list[float]) -> float | None:
    values = [v for v in values if v]
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


# -- sections ----------------------------------------------------------------

def targets_section(cases: dict) -> list[str]:
    rows = []
    for name, case in cases.items():
        # Peers return the VJP only, so `vjp` (same result) meets them; the reference also wrote y, so
        # the fused `value_and_vjp` (same results) meets it.
        ours, (peer, peer_rate) = mpts(case, HEADLINE), best_peer(case)
        ours_vjp = mpts(case, "gradcomp vjp")
        anchor = ANCHOR_REF_NUMBA.get(name)
        latency = case["latency_us"].get("gradcomp vjp")
        jax_latency = case["latency_us"].get("JAX jit")
        limit = TARGETS["latency_seed_us"] if name == "seed" else TARGETS["latency_us"]
        cold, warm, jax_cold = cold_warm(case)
        rows += [
            [name, "N=1e5 vjp throughput ≥ best peer (VJP only)", f"{fmt(ours_vjp)} vs {fmt(peer_rate)} ({peer})",
             verdict(None if ours_vjp is None or peer_rate is None else ours_vjp >= peer_rate)],
            [name, "N=1e5 value_and_vjp throughput ≥ ANCHORS ref Numba (y and VJP)", f"{fmt(ours)} vs {fmt(anchor)}",
             verdict(None if ours is None or anchor is None else ours >= anchor)],
            [name, f"single-point vjp ≤ {fmt(limit)} µs", f"{fmt(latency)} µs",
             verdict(None if latency is None else latency <= limit)],
            [name, f"single-point ≥ {fmt(TARGETS['latency_vs_jax'])}× faster than JAX jit",
             f"{fmt(ratio(jax_latency, latency))}×",
             verdict(None if latency is None or jax_latency is None
                     else jax_latency >= TARGETS["latency_vs_jax"] * latency)],
            [name, f"op ratio fused/forward ≤ {fmt(TARGETS['op_ratio'])}", fmt(case["ops"]["ratio"]),
             verdict(case["ops"]["ratio"] <= TARGETS["op_ratio"])],
            [name, f"time ratio fused/forward ≤ {fmt(TARGETS['time_ratio'])} (N=1e5)", fmt(time_ratio(case)),
             verdict(None if time_ratio(case) is None else time_ratio(case) <= TARGETS["time_ratio"])],
            [name, "cold compile ≤ JAX cold", f"{fmt(cold)} s vs {fmt(jax_cold)} s",
             verdict(None if cold is None or jax_cold is None else cold <= jax_cold)],
            [name, f"warm compile+first result < {fmt(TARGETS['warm_s'])} s beyond imports", f"{fmt(warm)} s",
             verdict(None if warm is None else warm < TARGETS["warm_s"])],
        ]
    speedups = [ratio(mpts(c, HEADLINE), mpts(c, JAX)) for c in cases.values()]
    jax_geomean = geomean([s for s in speedups if s])
    rows.append(["all", f"geomean throughput vs JAX ≥ {fmt(TARGETS['jax_geomean'])}×", f"{fmt(jax_geomean)}×",
                 verdict(None if jax_geomean is None else jax_geomean >= TARGETS["jax_geomean"])])
    passed = sum(r[-1] == "PASS" for r in rows)
    missed = sum(r[-1] != "PASS" and r[-1] != "—" for r in rows)
    return (["## Targets", "", f"{passed} PASS, {missed} MISS (visibility only; nothing here fails a test). "
             "Throughput targets: `gradcomp vjp` against peers (all return the VJP only), `gradcomp value_and_vjp` "
             "against the ANCHORS reference (both write y and the VJP).", ""]
            + table(["case", "target", "figure", "status"], rows))


def throughput_section(cases: dict, n: str) -> list[str]:
    labels = OURS + [ONE_THREAD] + PEERS
    rows = []
    for name, case in cases.items():
        peer, peer_rate = best_peer(case, n)
        ours = mpts(case, HEADLINE, n)
        row = [f"{name} ({case['n_in']}→{case['n_out']})"] + [mpts(case, label, n) for label in labels]
        row += [peer or "—", ratio(ours, peer_rate), ratio(mpts(case, "gradcomp vjp", n), peer_rate)]
        if n == MAIN_N:
            row += [ANCHOR_REF_NUMBA.get(name), ratio(ours, ANCHOR_REF_NUMBA.get(name))]
        rows.append(row)
    header = ["case"] + labels + ["best peer", "fused / best peer", "vjp / best peer"]
    if n == MAIN_N:
        header += ["ANCHORS ref Numba par", "fused / ref"]
    return table(header, rows)


def big_section(cases: dict) -> list[str]:
    rows = []
    for name, case in cases.items():
        big = case.get("big", {})
        if "skipped" in big:
            rows.append([name, "—", big["skipped"], "", "", "", ""])
            continue
        rates = big["throughput"]
        row = [name, f"{big['points']:.0e}"]
        for label in ["gradcomp value_and_vjp", "gradcomp vjp", "gradcomp forward"]:
            rate = rates.get(label, {}).get("mpts")
            row += [rate, rate * big["bytes_per_point"][label] / 1e3 if rate else None]
        rows.append(row)
    header = ["case", "N", "value_and_vjp Mpts/s", "GB/s", "vjp Mpts/s", "GB/s", "forward Mpts/s", "GB/s"]
    return (["GB/s counts each array read or written once (x, v in; VJP, and y when fused, out; float64).", ""]
            + table(header, [r + [""] * (len(header) - len(r)) for r in rows]))


def latency_section(cases: dict) -> list[str]:
    rows = []
    for name, case in cases.items():
        latency, dispatch = case["latency_us"], case.get("dispatch_us", {})
        ours = latency.get("gradcomp vjp")
        public, bare = dispatch.get("public k.vjp(x, v)"), dispatch.get("bare serial driver")
        rows.append([name, ours, latency.get("JAX jit"), latency.get("torch eager"),
                     ratio(latency.get("JAX jit"), ours), public, bare, dispatch.get("numba no-op, same arguments"),
                     None if public is None or bare is None else public - bare])
    header = ["case", "gradcomp k.vjp(x, v)", "JAX jit", "torch eager", "JAX / gradcomp",
              "profile: public k.vjp", "bare Numba driver", "Numba no-op floor", "Python wrapper (public − bare)"]
    return (["µs per call, median. The profile columns come from a second interleaved measurement: the public "
             "call again, the generated serial driver called directly with a preallocated output, an empty @njit "
             "function with the same arguments (Numba's dispatch floor), and what the public wrapper adds.", ""]
            + table(header, rows))


def compile_section(cases: dict) -> list[str]:
    rows, logs = [], []
    for name, case in cases.items():
        probes = case["compile"]
        cold, warm, jax_cold = (probes.get(k, {}) for k in ("gradcomp cold", "gradcomp warm", "JAX cold"))
        rows.append([name, cold.get("sympy_definition_s"), cold.get("compile_s"), cold.get("first_call_s"),
                     cold.get("total_s"),
                     warm.get("total_s"), warm.get("imports_s"), jax_cold.get("total_s"),
                     ratio(cold.get("total_s"), jax_cold.get("total_s")), case.get("in_process_compile_s")])
        for probe_name, probe in probes.items():
            if "error" in probe:
                logs.append(f"- {name}, {probe_name}: error {probe['error']}")
            elif probe.get("log"):
                logs.append(f"- {name}, {probe_name}: " + "; ".join(probe["log"]))
    header = ["case", "cold SymPy definition", "cold gc.compile", "cold first vjp (Numba)", "cold total", "warm total",
              "warm process imports", "JAX cold trace+compile+first", "gradcomp cold / JAX",
              "main process: cache hit + precompile 3 methods"]
    return (["Seconds, definition → first batched VJP result (N = 1e5), each in a fresh process after its "
             "imports (imports reported apart). Cold: empty GRADCOMP_CACHE_DIR; warm: the same directory again.",
             ""] + table(header, rows) + (["gradcomp's own log:", ""] + logs + [""] if logs else []))


def ops_section(cases: dict) -> list[str]:
    rows = [[name, c["ops"]["forward"], c["ops"]["vjp"], c["ops"]["value_and_vjp"], c["ops"]["ratio"],
             time_ratio(c), time_ratio(c, "1000")] for name, c in cases.items()]
    header = ["case", "forward ops", "vjp ops", "value_and_vjp ops", "ops fused / forward",
              "time fused / forward (N=1e5)", "time fused / forward (N=1e3)"]
    return table(header, rows)


def correctness_section(cases: dict) -> list[str]:
    labels = sorted({label for c in cases.values() for label in c["correctness"]})
    rows = []
    for name, case in cases.items():
        values = case["correctness"]
        rows.append([name] + [(fmt(values[label]) + (" ⚠" if values[label] > CORRECTNESS_FLAG else ""))
                              if label in values else "—" for label in labels])
    return ([f"max |G − G_JAX| / max |G_JAX| on one batch; ⚠ above {CORRECTNESS_FLAG:g}.", ""]
            + table(["case"] + labels, rows))


def spread_section(cases: dict) -> list[str]:
    lines = []
    for name, case in cases.items():
        load = case.get("load_average")
        if load:
            lines.append(f"- **{name}** load average at its start: {' '.join(f'{x:.2f}' for x in load)}")
        parts = [f"{label} {fmt(r['min'])}/{fmt(r['mpts'])}/{fmt(r['max'])} ({r['samples']})"
                 for label, r in case["throughput"].get(MAIN_N, {}).items()]
        lines.append(f"- **{name}** Mpts/s: " + "; ".join(parts))
    return (["Mpts/s min/median/max (samples) at N = 1e5. A load average above the core count means other "
             "processes shared the cores: Numba's and XLA's parallel loops wait for a descheduled thread, so "
             "their minimum samples drop by up to 100×.", ""] + lines + [""])


def header_section(run: dict) -> list[str]:
    machine, config = run["machine"], run["config"]
    kind = "QUICK run (short samples; rerun without --quick for the record)" if config["quick"] else "full run"
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    plan = config["batch_plan"]
    return [
        "# gradcomp benchmarks", "",
        f"- **{kind}**, generated by `python benchmarks/run.py{' --quick' if config['quick'] else ''} "
        f"--cases {' '.join(config['cases'])}` in {run['wall_s']:.0f} s",
        f"- Date: {machine['date']}; git {machine['git']}",
        f"- Machine: {machine['cpu']}, {machine['cores']} cores ({machine['usable_cores']} usable); "
        f"{machine['platform']}",
        f"- Load average: start {' '.join(f'{x:.2f}' for x in machine['load_average_start'])}, "
        f"end {' '.join(f'{x:.2f}' for x in machine.get('load_average_end', []))}",
        f"- Versions: {versions}",
        f"- Threads: Numba {machine['numba_threads']}, layer used {machine.get('numba_layer_used')}; "
        f"torch {machine['threads']}; XLA default; SymPy/SymEngine single-threaded",
        f"- Method: float64; throughput = median of {plan['samples']} samples after a warm-up call, each sample "
        f"loops the call for ≥ {plan['min_sample_s'] * 1e3:.0f} ms; systems slower than "
        f"{plan['slow_budget_s'] / plan['samples']:.2f} s/call get fewer samples; systems interleaved round-robin "
        "in one process per case. Inputs are prepared in each system's preferred layout outside the timed region.",
        "",
    ]


def write(run: dict, out: Path) -> None:
    """results.md and throughput.png in `out`."""
    cases = run["cases"]
    chart = write_chart(cases, out / "throughput.png")
    lines = header_section(run) + targets_section(cases)
    lines += ["## 1. Batched VJP throughput, N = 1e5 (million points/s; higher is better)", ""]
    lines += throughput_section(cases, MAIN_N)
    if chart:
        lines += [f"![throughput per case]({chart.name})", ""]
    lines += ["### N = 1e3", ""] + throughput_section(cases, "1000")
    lines += ["### Large batch, gradcomp only", ""] + big_section(cases)
    lines += ["## 2. Single-point VJP latency", ""] + latency_section(cases)
    lines += ["## 3. Compile time", ""] + compile_section(cases)
    lines += ["## 4. Operation counts and the fused/forward time ratio", ""] + ops_section(cases)
    lines += ["## Correctness vs JAX", ""] + correctness_section(cases)
    lines += ["## Spread", ""] + spread_section(cases)
    notes = list(run["notes"]) + [f"{label}: {note}" for c in cases.values() for label, note in c["notes"].items()]
    lines += ["## Notes", ""] + [f"- {n}" for n in dict.fromkeys(notes)] + [""]
    (out / "results.md").write_text("\n".join(lines))


def write_chart(cases: dict, path: Path) -> Path | None:
    """Grouped bars of N = 1e5 throughput per case, log scale; None without matplotlib."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    labels = [label for label in OURS + PEERS if any(mpts(c, label) for c in cases.values())]
    width = 0.8 / max(len(labels), 1)
    figure, axes = plt.subplots(figsize=(max(6, 1.6 * len(cases)), 4.5))
    for index, label in enumerate(labels):
        heights = [mpts(c, label) or 0 for c in cases.values()]
        axes.bar([i + index * width for i in range(len(cases))], heights, width, label=label)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(cases))], list(cases))
    axes.set_yscale("log")
    axes.set_ylabel("million points / s (N = 1e5, float64)")
    axes.set_title("Batched VJP throughput")
    axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
