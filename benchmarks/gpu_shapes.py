"""Real-size InstructBLIP FlanT5-XL shapes on a GPU: train samples/s, scoring questions/s, peak memory.

Builds the flan-t5-xl-shaped model (EVA ViT-g 1408x39 at 224 px / 14 px
patches, Q-Former 768x12 with 32 queries, T5-XL 2048x24, vocab 32128) with
random weights directly on CUDA in bf16 (no download), freezes it as DESIGN
§8 (Q-Former, queries and projection train in fp32 under bf16 autocast), and
times:
- training: AdamW steps on random images + 30-token prompts + 12-token answers;
- scoring: beam search with 3 beams and per-step scores (as pool scoring does);
then prints peak GPU memory. Without a GPU it says so and exits with status 2.
`--shape tiny --device cpu` runs the same code path on the tiny sizes (a smoke test).

    .venv/bin/python benchmarks/gpu_shapes.py [--train-batch 16] [--score-batch 32] [--steps 10]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def flan_t5_xl_config():
    from transformers import InstructBlipConfig, InstructBlipQFormerConfig, InstructBlipVisionConfig, T5Config

    vision = InstructBlipVisionConfig(hidden_size=1408, intermediate_size=6144, num_hidden_layers=39, num_attention_heads=16,
                                      image_size=224, patch_size=14, initializer_range=0.02)  # fmt: skip
    qformer = InstructBlipQFormerConfig(vocab_size=30523, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                        intermediate_size=3072, cross_attention_frequency=2, max_position_embeddings=512)  # fmt: skip
    text = T5Config(vocab_size=32128, d_model=2048, d_kv=64, d_ff=5120, num_layers=24, num_decoder_layers=24, num_heads=32,
                    feed_forward_proj="gated-gelu", tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
                    decoder_start_token_id=0)  # fmt: skip
    return InstructBlipConfig(vision_config=vision.to_dict(), qformer_config=qformer.to_dict(), text_config=text.to_dict(),
                              num_query_tokens=32, image_token_index=32100)  # fmt: skip


def tiny_config():
    from reltune.models.backbone import TinySizes, build_tiny_model

    return build_tiny_model(2000, 3, TinySizes(), seed=0).config


def random_batch(config, batch: int, prompt_tokens: int, answer_tokens: int, device: torch.device, generator: torch.Generator):
    vocab = config.text_config.vocab_size
    size = config.vision_config.image_size
    image_tokens = torch.full((batch, config.num_query_tokens), config.image_token_index, dtype=torch.long)
    # Text ids avoid the image token (32100 for flan-t5-xl, 3 for tiny) and the specials below 5.
    high = config.image_token_index if config.image_token_index > 5 else vocab
    prompt = torch.randint(5, high, (batch, prompt_tokens), generator=generator)
    return {
        "pixel_values": torch.randn(batch, 3, size, size, generator=generator).to(device, torch.bfloat16 if device.type == "cuda" else torch.float32),
        "qformer_input_ids": torch.randint(5, config.qformer_config.vocab_size, (batch, prompt_tokens), generator=generator).to(device),
        "qformer_attention_mask": torch.ones(batch, prompt_tokens, dtype=torch.long, device=device),
        "input_ids": torch.cat([image_tokens, prompt], dim=1).to(device),
        "attention_mask": torch.ones(batch, config.num_query_tokens + prompt_tokens, dtype=torch.long, device=device),
        "labels": torch.randint(5, high, (batch, answer_tokens), generator=generator).to(device),
    }


def parse_arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=("flan-t5-xl", "tiny"), default="flan-t5-xl")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--train-batch", type=int, default=16)
    parser.add_argument("--score-batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument(
        "--json", default=None,
        help="results file (default on CUDA: benchmarks/results/gpu_shapes_<shape>_<date>.json, with the GPU in words)",
    )  # fmt: skip
    return parser.parse_args()


def build_model(shape: str, device: torch.device):
    """The random-init model of `shape`, frozen as DESIGN §8, trainable parts in fp32."""
    from transformers import InstructBlipForConditionalGeneration

    from reltune.models.backbone import Backbone, dtype_for, set_trainable

    config = flan_t5_xl_config() if shape == "flan-t5-xl" else tiny_config()
    dtype = dtype_for(device)
    torch.manual_seed(0)
    with torch.device(device):
        model = InstructBlipForConditionalGeneration(config).to(dtype)
    backbone = Backbone(model=model, processor=None, image_size=config.vision_config.image_size, preset=shape, device=device, dtype=dtype)
    set_trainable(backbone)
    for parameter in model.parameters():
        if parameter.requires_grad:
            parameter.data = parameter.data.float()
    return model, config, dtype


def time_training(model, config, args, device, autocast, synchronise) -> float:
    """AdamW steps on random batches (two warm-up steps untimed): samples/s."""
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, weight_decay=0.05)
    generator = torch.Generator().manual_seed(0)
    model.train()
    timings = []
    for step in range(args.steps + 2):  # two warm-up steps are not timed
        batch = random_batch(config, args.train_batch, 30, 12, device, generator)
        synchronise()
        start = time.perf_counter()
        with autocast:
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronise()
        if step >= 2:
            timings.append(time.perf_counter() - start)
    return args.train_batch * len(timings) / sum(timings)


def time_scoring(model, config, args, device, autocast, synchronise) -> float:
    """Beam search with 3 beams and per-step scores, as pool scoring runs it: questions/s."""
    generator = torch.Generator().manual_seed(1)
    model.eval()
    timings = []
    for step in range(max(2, args.steps // 2) + 1):
        batch = random_batch(config, args.score_batch, 30, 12, device, generator)
        batch.pop("labels")
        synchronise()
        start = time.perf_counter()
        with torch.no_grad(), autocast:
            model.generate(**batch, num_beams=3, num_return_sequences=3, max_new_tokens=12, output_scores=True,
                           return_dict_in_generate=True, do_sample=False)  # fmt: skip
        synchronise()
        if step >= 1:
            timings.append(time.perf_counter() - start)
    return args.score_batch * len(timings) / sum(timings)


def main() -> int:
    args = parse_arguments()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("gpu_shapes: no CUDA GPU available; run it on a GPU machine (or --shape tiny --device cpu to smoke-test)")
        return 2
    from reltune.models.backbone import trainable_parameter_count

    model, config, dtype = build_model(args.shape, device)
    total = sum(p.numel() for p in model.parameters())
    print(f"{args.shape}: {total / 1e9:.2f} B parameters, {trainable_parameter_count(model) / 1e6:.1f} M trainable, {dtype} on {device}")
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

    def synchronise() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    train_rate = time_training(model, config, args, device, autocast, synchronise)
    print(f"train: {train_rate:.1f} samples/s (batch {args.train_batch}, {args.steps} steps)")
    score_rate = time_scoring(model, config, args, device, autocast, synchronise)
    print(f"score (3 beams, 12 new tokens): {score_rate:.1f} questions/s (batch {args.score_batch})")
    print(f"ratio scoring / training throughput: {score_rate / train_rate:.2f}")
    peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    if peak is not None:
        print(f"peak GPU memory: {peak:.1f} GiB")
    write_results(args, device, {"parameters_billion": round(total / 1e9, 3), "train_samples_per_second": round(train_rate, 2),
                                 "score_questions_per_second": round(score_rate, 2), "peak_gpu_memory_gib": peak})  # fmt: skip
    return 0


def write_results(args: argparse.Namespace, device: torch.device, figures: dict) -> None:
    """The figures with the date and the device in words (benchmarks/results/ on CUDA, else only with --json)."""
    import datetime
    import json
    from pathlib import Path

    today = datetime.date.today().isoformat()
    path = args.json or (f"benchmarks/results/gpu_shapes_{args.shape}_{today}.json" if device.type == "cuda" else None)
    if path is None:
        return
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    record = {"date": today, "device": gpu, "shape": args.shape, "train_batch": args.train_batch,
              "score_batch": args.score_batch, "steps": args.steps, "torch": torch.__version__, **figures}  # fmt: skip
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {path}")


if __name__ == "__main__":
    sys.exit(main())
