"""The Markdown of ``python -m service.classify_speed``'s results (tables and the targets they meet)."""

from __future__ import annotations

from typing import Any

TARGETS = {"ratio_to_monolith_batch_1": 0.8, "per_second_batch_32": 150.0, "grpc_8_clients_pairs_per_second": 120.0,
           "served_after_commit_seconds": 1.0, "idle_rss_mib": 500.0}
"""What serving should reach (the product's targets for a version served as its head over its base)."""
WAYS = ("monolith", "hybrid", "compiled", "head", "head_int8")


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _cell(t: dict[str, float]) -> str:
    return f"{t['p50_ms']:.1f} / {t['p99_ms']:.1f}"


def render(r: dict[str, Any], command: str) -> str:
    p = r["in_process"]
    lines = [f"Measured with `{command}` on: {r['machine']}; inputs: {r['inputs']}; load average "
             f"{r['load_average_at_start']:.1f} at the start, {r['load_average_at_end']:.1f} at the end; "
             f"{r['seconds'] / 60:.0f} min in all. The learner is `{r['preset']}` + `mcil` after one task. "
             f"*head* is the version served as its head over its base (what the daemon serves: the frozen image "
             f"encoder compiled once per base, in {p['base_seconds']:.0f} s; the version's head built and checked "
             f"in {p['head_build_ms']:.1f} ms); *compiled* is the same version compiled into graphs of its own "
             f"({p['compile_seconds']:.0f} s, what every commit cost before).", "",
             "In one process, image + sound pairs (input preparation and the audio encoder included in every row; "
             f"{p['batches']['1']['head']['runs']} timed calls per cell at batch 1, "
             f"{p['batches']['32']['head']['runs']} at batch 8 and 32, where p99 is the slowest of them), "
             "p50 / p99 ms and pairs/s:", "",
             _row(["batch", *(f"{w} p50 / p99" for w in WAYS), *(f"{w} pairs/s" for w in WAYS), "head / monolith"]),
             _row(["---"] * (2 * len(WAYS) + 2))]
    for n, row in p["batches"].items():
        lines.append(_row([n, *(_cell(row[w]) for w in WAYS), *(f"{row[w]['per_second']:.0f}" for w in WAYS),
                           f"{row['head']['p50_ms'] / row['monolith']['p50_ms']:.2f}"]))
    flop = p["image_gflop"]
    agree = "; ".join(f"{name}: top-1 identical for {v['top1_same']} of {v['pairs']}, largest score difference "
                      f"{v['max_score_difference']:.1e}" for name, v in p["parity"].items())
    q = p["int8"]
    least = ", ".join(f"{name} {c['least']:.3f}" for name, c in q["cosine"].items())
    lines += ["", f"*head_int8* is the same head over the base's image encoder in int8 (`server.base_precision: int8`, "
              f"`export/int8.py`), calibrated on {q['pictures']} pictures of the classes learned, in {q['seconds']:.1f} s "
              f"(least cosine of int8 to fp32 outputs on them: {least})."]
    lines += ["", f"Against the hybrid path on the probe pairs: {agree}. The image tower's arithmetic "
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
                  _row(["clients", "head p50 / p99 ms", "head pairs/s", "hybrid p50 / p99 ms",
                        "hybrid pairs/s", "head, max_delay_ms 5: p50 / p99 ms", "pairs/s",
                        "head_int8 p50 / p99 ms", "head_int8 pairs/s", "light, int8: p50 / p99 ms", "pairs/s"]),
                  _row(["---"] * 11)]
        for n in g["head"]["clients"]:
            c, h, z, q8, lq = (g[m]["clients"][n] for m in ("head", "hybrid", "head_wait_5ms", "head_int8", "light_int8"))
            lines.append(_row([n, _cell(c), f"{c['pairs_per_second']:.0f}", _cell(h), f"{h['pairs_per_second']:.0f}",
                               _cell(z), f"{z['pairs_per_second']:.0f}", _cell(q8), f"{q8['pairs_per_second']:.0f}",
                               _cell(lq), f"{lq['pairs_per_second']:.0f}"]))
        lines += ["", f"From a commit (the client sees its job succeed) to the version served as its head: "
                  f"{g['served_after_first_commit_seconds']:.1f} s for the first version (its base built in a child "
                  f"process), {1000 * g['served_after_second_commit_seconds']:.0f} ms for the second (its head "
                  "swapped in; nothing compiled).", "",
                  "Daemon resident memory (VmRSS, MiB), idle: "
                  f"{g['idle_rss_mib_before_learning']:.0f} after start with no version, "
                  f"{g['idle_rss_mib_after_learning']:.0f} after learning two tasks, "
                  f"{g['head']['idle_rss_mib_after_start']:.0f} after a restart serving the head over its base, "
                  f"{g['head']['idle_rss_mib_after_serving']:.0f} after the load above "
                  f"({g['hybrid']['idle_rss_mib_after_serving']:.0f} for the hybrid path; the light daemon with int8, its "
                  f"serving process {g['light_int8']['idle_rss_mib_after_serving']:.0f}, its learner child apart)."]
    if r.get("footprint"):
        steps = r["footprint"]
        parts = [f"{name} +{mib - prev:.0f}" for (name, mib), (_, prev) in zip(steps[1:], steps[:-1])]
        lines += ["", f"What a fresh process holds before serving anything (VmRSS, MiB): {steps[0][1]:.0f} for "
                  f"Python, then {', '.join(parts)}: {steps[-1][1]:.0f} in all."]
    if g:
        over = g["head"]["clients"]["1"]["p50_ms"] - p["batches"]["1"]["head"]["p50_ms"]
        said = f"{over:.1f} ms" if over >= 1.0 else "under 1 ms, within this run's noise"
        lines += ["", f"gRPC, decoding the request and batching, for one client: {said} (its p50 over gRPC "
                  f"minus the head's p50 in process at batch 1: {over:.1f} ms)."]
    lines += ["", "Targets: " + targets(r)]
    return "\n".join(lines) + "\n"


def targets(r: dict[str, Any]) -> str:
    p = r["in_process"]["batches"]
    m1 = p["1"]["monolith"]
    checks = []
    for way, said in (("head", "fp32"), ("head_int8", "int8")):
        h1, h32 = p["1"][way], p["32"][way]
        ratio = h1["p50_ms"] / m1["p50_ms"]
        checks += [f"{said}: p50 at batch 1 {h1['p50_ms']:.1f} ms, {ratio:.2f} x the fp32 monolith's {m1['p50_ms']:.1f} "
                   f"(target <= {TARGETS['ratio_to_monolith_batch_1']:g} x: "
                   f"{_met(ratio <= TARGETS['ratio_to_monolith_batch_1'])})",
                   f"{said}: {h32['per_second']:.0f} pairs/s at batch 32 (target >= {TARGETS['per_second_batch_32']:g}: "
                   f"{_met(h32['per_second'] >= TARGETS['per_second_batch_32'])})"]
    g = r.get("grpc")
    if g:
        for way, said in (("head", "fp32"), ("head_int8", "int8"), ("light_int8", "light int8")):
            eight = g[way]["clients"]["8"]
            checks.append(f"{said}: 8 gRPC clients {eight['pairs_per_second']:.0f} pairs/s (target >= "
                          f"{TARGETS['grpc_8_clients_pairs_per_second']:g}: "
                          f"{_met(eight['pairs_per_second'] >= TARGETS['grpc_8_clients_pairs_per_second'])})")
        rss = g["head"]["idle_rss_mib_after_serving"]
        swap = g["served_after_second_commit_seconds"]
        checks += [f"a commit served as its head {1000 * swap:.0f} ms after it (target <= "
                   f"{TARGETS['served_after_commit_seconds']:g} s: {_met(swap <= TARGETS['served_after_commit_seconds'])})",
                   f"a daemon in one process idle at {rss:.0f} MiB (target <= {TARGETS['idle_rss_mib']:g}: "
                   f"{_met(rss <= TARGETS['idle_rss_mib'])}; the light daemon: \"Serving without PyTorch\" below)"]
    return "; ".join(checks) + "."


def _met(ok: bool) -> str:
    return "met" if ok else "not met"
