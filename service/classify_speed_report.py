"""The Markdown of ``python -m service.classify_speed``'s results (tables and the targets they meet)."""

from __future__ import annotations

from typing import Any

TARGETS = {"p50_ms_batch_1": 10.0, "per_second_batch_32": 150.0, "ratio_to_monolith": 1.3,
           "grpc_8_clients_pairs_per_second": 100.0, "grpc_8_clients_p99_over_p50": 3.0, "idle_rss_mib": 1024.0}


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def render(r: dict[str, Any], command: str) -> str:
    p = r["in_process"]
    lines = [f"Measured with `{command}` on: {r['machine']}; inputs: {r['inputs']}; load average "
             f"{r['load_average_at_start']:.1f} at the start, {r['load_average_at_end']:.1f} at the end; "
             f"{r['seconds'] / 60:.0f} min in all. The learner is `{r['preset']}` + `mcil` after one task "
             f"(compiled in {p['compile_seconds']:.0f} s).", "",
             "In one process, image + sound pairs (input preparation and the audio encoder included in every row; "
             f"{p['batches']['1']['compiled']['runs']} timed calls per cell at batch 1, "
             f"{p['batches']['32']['compiled']['runs']} at batch 8 and 32, where p99 is the slowest of them):", "",
             _row(["batch", "frozen monolith p50 / p99 ms", "hybrid p50 / p99 ms", "compiled p50 / p99 ms",
                   "monolith pairs/s", "hybrid pairs/s", "compiled pairs/s", "compiled / monolith (p50)"]),
             _row(["---"] * 8)]
    for n, row in p["batches"].items():
        m, h, c = row["monolith"], row["hybrid"], row["compiled"]
        lines.append(_row([n, f"{m['p50_ms']:.1f} / {m['p99_ms']:.1f}", f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f}",
                           f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}", f"{m['per_second']:.0f}",
                           f"{h['per_second']:.0f}", f"{c['per_second']:.0f}", f"{c['p50_ms'] / m['p50_ms']:.2f}"]))
    par = p["parity"]
    flop = p["image_gflop"]
    lines += ["", f"Compiled against hybrid on {par['pairs']} pairs: top-1 identical for {par['top1_same']}, "
              f"largest score difference {par['max_score_difference']:.1e}. The image tower's arithmetic "
              f"(PyTorch's FlopCounterMode, one image): {flop['frozen']:.3f} GFLOP frozen, "
              f"{flop['with_experts']:.3f} with the experts ({flop['with_experts'] / flop['frozen']:.2f} x).", "",
              "Where the time goes (median ms of each stage timed alone on the same pairs):", "",
              _row(["stage", "batch 1", "batch 32"]), _row(["---"] * 3)]
    for stage, ms in p["stages"]["1"].items():
        lines.append(_row([stage, f"{ms:.2f}", f"{p['stages']['32'].get(stage, float('nan')):.1f}"]))
    ops = p.get("av_graph_ops_batch_32", {})
    if ops:
        total = sum(ops.values())
        top = ", ".join(f"{op} {ms:.1f} ms ({100 * ms / total:.0f}%)" for op, ms in list(ops.items())[:6])
        lines += ["", f"Inside the compiled av graph at batch 32 (ONNX Runtime's profiler, per run): {top}; "
                  f"{total:.1f} ms in all operators."]
    g = r.get("grpc")
    if g:
        lines += ["", "Over gRPC on loopback (a daemon in its own process, dynamic batching on with its default "
                  "max_delay_ms 0 unless said, one pair per request; the same committed version every time):", "",
                  _row(["clients", "compiled p50 / p99 ms", "compiled pairs/s", "hybrid p50 / p99 ms",
                        "hybrid pairs/s", "compiled, max_delay_ms 5: p50 / p99 ms", "pairs/s"]), _row(["---"] * 7)]
        for n in g["compiled"]["clients"]:
            c, h, z = (g[m]["clients"][n] for m in ("compiled", "hybrid", "compiled_wait_5ms"))
            lines.append(_row([n, f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}", f"{c['pairs_per_second']:.0f}",
                               f"{h['p50_ms']:.1f} / {h['p99_ms']:.1f}", f"{h['pairs_per_second']:.0f}",
                               f"{z['p50_ms']:.1f} / {z['p99_ms']:.1f}", f"{z['pairs_per_second']:.0f}"]))
        lines += ["", "Daemon resident memory (VmRSS, MiB), idle: "
                  f"{g['idle_rss_mib_before_learning']:.0f} after start with no version, "
                  f"{g['idle_rss_mib_after_learning']:.0f} after learning a task and swapping in its graphs "
                  f"(compiled in a child process, serving {g['compiled_after_commit_seconds']:.0f} s after the "
                  f"commit), {g['compiled']['idle_rss_mib_after_start']:.0f} after a restart serving the compiled "
                  f"version, {g['compiled']['idle_rss_mib_after_serving']:.0f} after the compiled load above "
                  f"({g['hybrid']['idle_rss_mib_after_serving']:.0f} for the hybrid path)."]
    if r.get("footprint"):
        steps = r["footprint"]
        parts = [f"{name} +{mib - prev:.0f}" for (name, mib), (_, prev) in zip(steps[1:], steps[:-1])]
        lines += ["", f"What a fresh process holds before serving anything (VmRSS, MiB): {steps[0][1]:.0f} for "
                  f"Python, then {', '.join(parts)}: {steps[-1][1]:.0f} in all."]
    if g:
        over = g["compiled"]["clients"]["1"]["p50_ms"] - p["batches"]["1"]["compiled"]["p50_ms"]
        said = f"{over:.1f} ms" if over >= 1.0 else "under 1 ms, within this run's noise"
        lines += ["", f"gRPC, decoding the request and batching, for one client: {said} (its p50 over gRPC "
                  f"minus the compiled p50 in process at batch 1: {over:.1f} ms)."]
    lines += ["", "Targets: " + targets(r)]
    return "\n".join(lines) + "\n"


def targets(r: dict[str, Any]) -> str:
    p = r["in_process"]["batches"]
    c1, c32, m1 = p["1"]["compiled"], p["32"]["compiled"], p["1"]["monolith"]
    ratio = max(p[n]["compiled"]["p50_ms"] / p[n]["monolith"]["p50_ms"] for n in p)
    checks = [f"p50 at batch 1 {c1['p50_ms']:.1f} ms (target <= {TARGETS['p50_ms_batch_1']:g}: "
              f"{_met(c1['p50_ms'] <= TARGETS['p50_ms_batch_1'])}; the monolith itself takes {m1['p50_ms']:.1f})",
              f"{c32['per_second']:.0f} pairs/s at batch 32 (target >= {TARGETS['per_second_batch_32']:g}: "
              f"{_met(c32['per_second'] >= TARGETS['per_second_batch_32'])})",
              f"at most {ratio:.2f} x the monolith (target <= {TARGETS['ratio_to_monolith']:g}: "
              f"{_met(ratio <= TARGETS['ratio_to_monolith'])})"]
    g = r.get("grpc")
    if g:
        eight = g["compiled"]["clients"]["8"]
        spread = eight["p99_ms"] / eight["p50_ms"]
        rss = g["compiled"]["idle_rss_mib_after_serving"]
        checks += [f"8 gRPC clients {eight['pairs_per_second']:.0f} pairs/s (target >= "
                   f"{TARGETS['grpc_8_clients_pairs_per_second']:g}: "
                   f"{_met(eight['pairs_per_second'] >= TARGETS['grpc_8_clients_pairs_per_second'])}), "
                   f"p99 {spread:.1f} x p50 (target <= {TARGETS['grpc_8_clients_p99_over_p50']:g}: "
                   f"{_met(spread <= TARGETS['grpc_8_clients_p99_over_p50'])})",
                   f"idle daemon {rss:.0f} MiB (target <= {TARGETS['idle_rss_mib']:g}: "
                   f"{_met(rss <= TARGETS['idle_rss_mib'])})"]
    return "; ".join(checks) + "."


def _met(ok: bool) -> str:
    return "met" if ok else "not met"
