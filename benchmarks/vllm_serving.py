"""vLLM serving throughput and time to first token, pruned vs unpruned, same requests, one run.

    python benchmarks/vllm_serving.py --tiny llava_next            # CPU: a tiny-width model, real token counts
    python benchmarks/vllm_serving.py --model llava-hf/llava-v1.6-vicuna-7b-hf --keep 0.25   # a GPU

Both engines run gprune's plugin class; the unpruned one has no ``gprune`` override, which makes it vLLM's
own model (the plugin only changes a model that sets one). Throughput: all requests submitted at once
(vLLM batches them), requests/s and generated tokens/s. TTFT: each request alone with one output token,
so it is the prefill (vision tower, selection, LLM) of one request. Printed as pruned / unpruned ratios.

`--tiny` builds a random-weight checkpoint with the released models' token counts and tiny widths
(LLaVA-NeXT: 336 px tiles of 14 px patches, 576 + up to 2304 tokens per image; Qwen2.5-VL: up to
~1000 merged tokens per image), so the prefill length, not the width, is what pruning shortens.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

QWEN_SLOT = "<|vision_start|><|image_pad|><|vision_end|>"


def build_tiny(kind: str, path: Path) -> tuple[Path, str]:
    """A tiny-width checkpoint with real token counts, and its prompt's image slot."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "vllm_plugin"))
    import tiny_models

    if kind == "llava_next":
        return tiny_models.save_llava_next(path, tile=336, patch=14), "<image>\n"
    return tiny_models.save_qwen2_5_vl(path, max_merged_tokens=1024), QWEN_SLOT


def requests(slot: str, count: int, size: tuple[int, int], seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        prompt = f"USER: {slot}Describe the image in detail. ASSISTANT:"
        out.append({"prompt": prompt, "multi_modal_data": {"image": Image.fromarray(pixels)}})
    return out


def measure(path: Path, gprune: dict[str, Any] | None, reqs: list[dict[str, Any]], args: argparse.Namespace) -> dict:
    import vllm

    engine_args: dict[str, Any] = {"max_model_len": args.max_model_len, "seed": 0, "enable_prefix_caching": False}
    if args.cpu:
        engine_args |= {"distributed_executor_backend": "uni", "enforce_eager": True, "gpu_memory_utilization": 0.3}
    if gprune is not None:
        engine_args["hf_overrides"] = {"gprune": gprune}
    llm = vllm.LLM(str(path), **engine_args)
    runner = llm.llm_engine.model_executor.driver_worker.worker.model_runner if args.cpu else None
    model_cls = type(runner.get_model()).__name__ if runner is not None else "(in a worker process)"
    one = vllm.SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)
    many = vllm.SamplingParams(max_tokens=args.max_tokens, temperature=0.0, ignore_eos=True)
    llm.generate(reqs[:1], one, use_tqdm=False)  # warm-up (the encoder cache is keyed by image: use other images)
    ttft = []
    for req in reqs[1 : 1 + args.ttft_requests]:
        start = time.perf_counter()
        llm.generate([req], one, use_tqdm=False)
        ttft.append(time.perf_counter() - start)
    batch = reqs[1 + args.ttft_requests :]
    start = time.perf_counter()
    outs = llm.generate(batch, many, use_tqdm=False)
    seconds = time.perf_counter() - start
    generated = sum(len(o.outputs[0].token_ids) for o in outs)
    result = {
        "model_class": model_cls,
        "prompt_tokens": statistics.mean(len(o.prompt_token_ids) for o in outs),
        "ttft_s": statistics.median(ttft),
        "requests_per_s": len(batch) / seconds,
        "tokens_per_s": generated / seconds,
    }
    del llm
    gc.collect()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a checkpoint (path or hub id) of LLaVA-NeXT or Qwen2.5-VL")
    source.add_argument("--tiny", choices=("llava_next", "qwen2_5_vl"), help="build a tiny random-weight one")
    parser.add_argument("--slot", help="the prompt's image slot for --model (default: LLaVA's '<image>\\n')")
    parser.add_argument("--keep", type=float, default=0.25, help="keep ratio (default 0.25)")
    parser.add_argument("--requests", type=int, default=16, help="requests in the throughput batch")
    parser.add_argument("--ttft-requests", type=int, default=5, help="requests timed alone for TTFT")
    parser.add_argument("--max-tokens", type=int, default=16, help="generated tokens per request")
    parser.add_argument("--image-size", default="672x672", help="HxW of every image (default 672x672)")
    parser.add_argument("--max-model-len", type=int, default=4096)
    parser.add_argument("--cpu", action="store_true", help="in-process CPU engine (implied by --tiny)")
    args = parser.parse_args(argv)
    args.cpu = args.cpu or args.tiny is not None
    if args.cpu:
        os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    height, width = (int(v) for v in args.image_size.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        if args.tiny:
            path, slot = build_tiny(args.tiny, Path(tmp) / args.tiny)
        else:
            path, slot = Path(args.model), args.slot or "<image>\n"
        reqs = requests(slot, 1 + args.ttft_requests + args.requests, (height, width), seed=0)
        base = measure(path, None, reqs, args)
        # new images for the second engine too would change nothing: each engine has its own encoder cache
        pruned = measure(path, {"keep": args.keep}, reqs, args)
    ratios = {
        "prompt_tokens": pruned["prompt_tokens"] / base["prompt_tokens"],
        "ttft_speedup": base["ttft_s"] / pruned["ttft_s"],
        "requests_per_s": pruned["requests_per_s"] / base["requests_per_s"],
        "tokens_per_s": pruned["tokens_per_s"] / base["tokens_per_s"],
    }
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs" if args.cpu else "gpu",
        "model": args.tiny or args.model,
        "keep": args.keep,
        "image_size": [height, width],
        "requests": args.requests,
        "max_tokens": args.max_tokens,
        "unpruned": base,
        "pruned": pruned,
        "pruned_over_unpruned": ratios,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
