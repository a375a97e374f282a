"""Decoding speed and memory on one GPU (issue 6 item 4): MTA with the decoding cache (docs/spec.md §6) against the
Transformer with its KV cache, and against recomputing the whole map at every step as the official generator does.

Models: the --size presets (default 880M) of the MTA family (6×11 kernels before and after softmax in layers
2, 6, …, full head mixing before and after softmax, group norm and gate in every layer) and of the Transformer,
bf16 weights, random initialisation, batch --batch. For each context N (1k … 32k) and method:

    transformer_cached  DecoderLM + DecodeCache: per layer keys and values; SDPA over them per new token
    mta_cached          DecoderLM + DecodeCache: keys, values, the last c_q - 1 queries and post-softmax conv
                        rows; mta.ops.decode.mta_attention_step per new token: O(c_q·N) attention work
    mta_recompute       no cache: every step runs the whole sequence through the model with the reference
                        backend (the materialised N×N map, the official generator's way): O(N²) per token

The cache of N positions is filled with random values of exactly the shapes a prefill leaves (a one-token
prefill builds each layer's state, then its time axis is resized to N: the work of a decoding step does not
depend on the values), unless --prefill real runs the prompt through the model (the MTA prompt through the
triton backend; the time is recorded as prefill_s). Then --warmup greedy steps untimed and --steps timed
(--recompute-steps for mta_recompute), one synchronisation at the end: tokens/s = batch·steps ÷ time.
peak_gib: torch.cuda.max_memory_allocated from before the cache is built to the last step (weights included);
cache_gib: the cache's tensors after the last step. mta_recompute is skipped with the reason where its
reference maps (about 6 fp32 B×H×N×N tensors in flight) would not fit the GPU, an out-of-memory is "oom", and
no measurement starts after --time-budget-s. With --profile-steps K, K more steps per row run under
torch.profiler and the row's "profile" holds the aten calls per step and the ops with the most self time per
step (GPU time on a GPU). The JSON is rewritten after each row, and --resume keeps its measured rows and
measures only the (method, N) pairs it lacks (a run cut short by the time budget, or more contexts).

    python benchmarks/decode_gpu.py --time-budget-s 170          # → results/perf/decode_gpu.json
    python benchmarks/decode_gpu.py --resume --contexts 16384 32768   # a later session: the rest
    python benchmarks/decode_gpu.py --quick --out /tmp/decode.json   # CPU smoke run: tiny presets
"""

from __future__ import annotations

import argparse
import json
import math
import time
import traceback
from pathlib import Path
from typing import NamedTuple

import torch

from mta.models import DecodeCache, DecoderLM, get_preset
from profiling import (fill_defaults, first_line, fresh_cuda_state, kept_rows, profile_calls, synchronize,
                           total_memory_gib, write_json_atomic)
from mta.train.runtime import resolve_device

DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "perf" / "decode_gpu.json"
METHODS = ("transformer_cached", "mta_cached", "mta_recompute")
REFERENCE_MAPS = 6
FULL = {"size": "880M", "contexts": [1024, 2048, 4096, 8192, 16384, 32768], "batch": 1, "steps": 32,
        "recompute_steps": 3, "warmup": 2}
QUICK = {"size": "tiny", "contexts": [24, 48], "batch": 2, "steps": 3, "recompute_steps": 2, "warmup": 1}


class Measurement(NamedTuple):
    method: str
    context: int


def planned(contexts: list[int], methods: list[str]) -> list[Measurement]:
    """Every (method, context), shortest contexts first, so a time budget keeps the fullest set of contexts."""
    return [Measurement(method, n) for n in sorted(contexts) for method in METHODS if method in methods]


def reference_gib(model: DecoderLM, batch: int, tokens: int) -> float:
    """The memory the reference maps of one layer need for `tokens` positions (REFERENCE_MAPS fp32 maps)."""
    return REFERENCE_MAPS * batch * model.config.n_heads * tokens**2 * 4 / 2**30


def build_model(method: str, args: argparse.Namespace, device: torch.device) -> DecoderLM:
    """The model `method` decodes with (the same weights for both MTA methods: the same seed)."""
    torch.manual_seed(0)
    max_len = max(args.contexts) + args.warmup + max(args.steps, args.recompute_steps) + args.profile_steps
    if method == "transformer_cached":
        config = get_preset(f"{args.size}-transformer", max_seq_len=max_len)
    else:  # the prompt of mta_cached (--prefill real) runs through auto (triton on CUDA); mta_recompute: reference
        config = get_preset(f"{args.size}-mta", max_seq_len=max_len,
                            backend="reference" if method == "mta_recompute" else "auto")
    with torch.device(device):
        model = DecoderLM(config)
    return model.to(torch.bfloat16 if device.type == "cuda" else torch.float32).eval()


def random_cache(model: DecoderLM, batch: int, context: int, device: torch.device) -> DecodeCache:
    """A cache of `context` positions holding random values in the shapes and dtypes a prefill leaves."""
    cache = DecodeCache(len(model.layers))
    model.hidden(torch.zeros(batch, 1, dtype=torch.long, device=device), cache=cache)  # builds every layer's state
    for state in cache.layers:  # AttentionState: keys/values [B, H_kv, L, d], weights [B, H, rows, L]
        state.keys = torch.randn(*state.keys.shape[:2], context, state.keys.shape[3], dtype=state.keys.dtype,
                                 device=device)
        state.values = torch.randn_like(state.keys)
        if state.queries is not None:
            state.queries = torch.randn_like(state.queries)
        if state.weights is not None:
            state.weights = torch.rand(*state.weights.shape[:3], context, dtype=state.weights.dtype, device=device)
    return cache


def cache_bytes(cache: DecodeCache) -> int:
    tensors = [getattr(state, name) for state in cache.layers for name in ("keys", "values", "queries", "weights")]
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def next_token(model: DecoderLM, tokens: torch.Tensor, cache: DecodeCache | None) -> torch.Tensor:
    """Greedy: the argmax after `tokens` [B, T] (the new ones with a cache, the whole sequence without), [B, 1]."""
    return model.head(model.hidden(tokens, cache=cache)[:, -1:]).argmax(-1)


def decode(m: Measurement, model: DecoderLM, args: argparse.Namespace, device: torch.device) -> dict:
    """Fill the cache (or not, to recompute), run the warm-up and timed greedy steps; tokens/s, memory."""
    generator = torch.Generator(device=device).manual_seed(1)
    sequence = torch.randint(model.config.vocab_size, (args.batch, m.context), generator=generator, device=device)
    recompute = m.method == "mta_recompute"
    steps = args.recompute_steps if recompute else args.steps
    cache, token, prefill_s = None, sequence[:, -1:], None
    if not recompute:
        start = time.perf_counter()
        if args.prefill == "real":
            cache = DecodeCache(len(model.layers))
            token = next_token(model, sequence, cache)
            synchronize(device)
            prefill_s = time.perf_counter() - start
        else:
            cache = random_cache(model, args.batch, m.context, device)
    for step in range(args.warmup + steps):
        if step == args.warmup:
            synchronize(device)
            started = time.perf_counter()
        token, sequence = greedy_step(model, token, sequence, cache)
    synchronize(device)
    elapsed = time.perf_counter() - started
    row = {
        "status": "ok",
        "steps": steps,
        "tokens_per_s": args.batch * steps / elapsed,
        "ms_per_token": elapsed / steps * 1e3,
        "peak_gib": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "cache_gib": None if cache is None else cache_bytes(cache) / 2**30,
        "prefill_s": prefill_s,
    }
    if args.profile_steps:  # after the peak memory is read: the profiler's own memory is not the method's
        row["profile"] = step_profile(model, token, sequence, cache, args.profile_steps, device)
    return row


def greedy_step(model: DecoderLM, token: torch.Tensor, sequence: torch.Tensor, cache: DecodeCache | None):
    """One greedy step: with a cache, from the last token (the new token, sequence unchanged); without one,
    recomputing the whole sequence (the new token, sequence extended by it)."""
    if cache is None:
        token = next_token(model, sequence, None)
        return token, torch.cat([sequence, token], dim=1)
    return next_token(model, token, cache), sequence


def step_profile(model: DecoderLM, token: torch.Tensor, sequence: torch.Tensor, cache: DecodeCache | None,
                 steps: int, device: torch.device) -> dict:
    """`steps` more greedy steps under torch.profiler (profiling.profile_calls)."""
    state = [token, sequence]

    def step() -> None:
        state[:] = greedy_step(model, *state, cache)

    return profile_calls(step, steps, device)


def skip_reason(m: Measurement, model: DecoderLM, args: argparse.Namespace, device: torch.device) -> str | None:
    if m.method != "mta_recompute" or device.type != "cuda":
        return None
    need = reference_gib(model, args.batch, m.context + args.warmup + args.recompute_steps + args.profile_steps)
    total = total_memory_gib(device)
    if need > total:
        return f"needs about {need:.0f} GiB ({REFERENCE_MAPS} fp32 B×H×N×N maps), the GPU has {total:.0f} GiB"
    return None


def measure(m: Measurement, model: DecoderLM, args: argparse.Namespace, device: torch.device) -> dict:
    """One row: measured, or "oom" / "error" with the reason; memory freed afterwards."""
    row = {**m._asdict(), "batch": args.batch}
    started = time.monotonic()
    fresh_cuda_state(device)
    try:
        with torch.inference_mode():
            row.update(decode(m, model, args, device))
    except torch.cuda.OutOfMemoryError as error:
        row.update(status="oom", reason=first_line(error))
    except Exception as error:  # one failing row must not cost the rest of a GPU session
        traceback.print_exc()
        row.update(status="error", reason=f"{type(error).__name__}: {first_line(error)}")
    fresh_cuda_state(device)
    row["wall_s"] = round(time.monotonic() - started, 2)
    return row


def add_ratios(rows: list[dict]) -> None:
    """Per measured MTA row: tokens/s and peak memory over the Transformer's at the same context, and (cached)
    the speed-up over recomputing."""
    ok = {(r["method"], r["context"]): r for r in rows if r["status"] == "ok"}
    for row in rows:
        base = ok.get(("transformer_cached", row["context"]))
        recompute = ok.get(("mta_recompute", row["context"]))
        measured = row["status"] == "ok"
        row["tokens_per_s_vs_transformer"] = (row["tokens_per_s"] / base["tokens_per_s"]
                                              if measured and base else None)
        row["peak_vs_transformer"] = (row["peak_gib"] / base["peak_gib"]
                                      if measured and base and row.get("peak_gib") and base.get("peak_gib") else None)
        row["speedup_vs_recompute"] = (row["tokens_per_s"] / recompute["tokens_per_s"]
                                       if measured and recompute and row["method"] == "mta_cached" else None)


def write_results(path: Path, results: dict) -> None:
    add_ratios(results["rows"])
    write_json_atomic(path, results)


def summary(results: dict) -> str:
    fmt = lambda v, spec: "—" if v is None else format(v, spec)  # noqa: E731
    lines = [f"{'method':<19} {'N':>6} {'tokens/s':>10} {'ms/token':>9} {'peak GiB':>9} {'cache GiB':>9} "
             f"{'×Transformer':>12} {'×recompute':>10}"]
    for row in results["rows"]:
        if row["status"] != "ok":
            lines.append(f"{row['method']:<19} {row['context']:>6} {row['status']}: {(row.get('reason') or '')[:70]}")
            continue
        lines.append(f"{row['method']:<19} {row['context']:>6} {row['tokens_per_s']:>10.1f} {row['ms_per_token']:>9.2f} "
                     f"{fmt(row['peak_gib'], '.2f'):>9} {fmt(row['cache_gib'], '.3f'):>9} "
                     f"{fmt(row['tokens_per_s_vs_transformer'], '.3f'):>12} {fmt(row['speedup_vs_recompute'], '.1f'):>10}")
    return "\n".join(lines)


def resumed(earlier: dict, results: dict) -> dict:
    """`results` (a new run's empty results) holding `earlier`'s measured rows, after checking that both runs
    measure the same thing; the earlier run's meta is kept as "earlier_meta" (its rows' commit and date)."""
    ignore = ("contexts",)
    old = {k: v for k, v in earlier["settings"].items() if k not in ignore}
    new = {k: v for k, v in results["settings"].items() if k not in ignore}
    if old != new:
        raise SystemExit(f"--resume: the settings differ from the earlier run's: {old} vs {new}")
    rows = kept_rows(earlier["rows"])
    metas = earlier.get("earlier_meta", []) + [earlier["meta"]]
    contexts = sorted(set(earlier["settings"]["contexts"]) | set(results["settings"]["contexts"]))
    return {**results, "settings": {**results["settings"], "contexts": contexts}, "rows": rows, "earlier_meta": metas}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", help="default: cuda when available, else cpu")
    parser.add_argument("--quick", action="store_true", help=f"tiny CPU smoke run: {QUICK}")
    parser.add_argument("--size", help=f"preset size (<size>-mta, <size>-transformer), default {FULL['size']}")
    parser.add_argument("--contexts", type=int, nargs="+", help=f"cached positions N, default {FULL['contexts']}")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--batch", type=int, help=f"sequences decoded together, default {FULL['batch']}")
    parser.add_argument("--steps", type=int, help=f"timed steps with a cache, default {FULL['steps']}")
    parser.add_argument("--recompute-steps", type=int, help=f"timed mta_recompute steps, default {FULL['recompute_steps']}")
    parser.add_argument("--warmup", type=int, help=f"untimed steps first, default {FULL['warmup']}")
    parser.add_argument("--prefill", choices=("random", "real"), default="random",
                        help="fill the cache with random values of the right shapes (default) or run the prompt")
    parser.add_argument("--profile-steps", type=int, default=0,
                        help="after the timed steps, profile this many more and record the top ops (default 0: off)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--time-budget-s", type=float, default=math.inf,
                        help="start no measurement after this many seconds (default: no limit)")
    parser.add_argument("--resume", action="store_true",
                        help="keep --out's measured rows (same settings but contexts) and measure only the others")
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    fill_defaults(args, defaults)
    if args.quick and args.device is None:
        args.device = "cpu"
    return args


def main(argv: list[str] | None = None) -> dict:
    from mta.provenance import run_metadata

    args = parse_args(argv)
    device = resolve_device(args.device or "auto")
    settings = {"device": str(device), "size": args.size, "batch": args.batch, "contexts": args.contexts,
                "steps": args.steps, "recompute_steps": args.recompute_steps, "warmup": args.warmup,
                "prefill": args.prefill, "weights": "bfloat16" if device.type == "cuda" else "float32",
                "total_memory_gib": total_memory_gib(device)}
    results = {"meta": run_metadata(), "settings": settings, "rows": [], "not_started": 0}
    if args.resume and args.out.exists():
        results = resumed(json.loads(args.out.read_text()), results)
    done = {(row["method"], row["context"]) for row in results["rows"]}
    started = time.monotonic()
    models: dict[str, DecoderLM] = {}
    for m in planned(args.contexts, args.methods):
        if (m.method, m.context) in done:
            continue
        if time.monotonic() - started > args.time_budget_s:
            results["not_started"] += 1
            continue
        if m.method not in models:
            models[m.method] = build_model(m.method, args, device)
        model = models[m.method]
        reason = skip_reason(m, model, args, device)
        row = {**m._asdict(), "batch": args.batch, "status": "skipped", "reason": reason} if reason else \
            measure(m, model, args, device)
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        write_results(args.out, results)
    write_results(args.out, results)
    print(summary(results))
    print(f"wrote {args.out} ({len(results['rows'])} rows, {results['not_started']} not started: time budget)")
    return results


if __name__ == "__main__":
    main()
