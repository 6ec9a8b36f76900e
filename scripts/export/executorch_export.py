#!/usr/bin/env python3
"""A deepthin model directory as an ExecuTorch program (.pte) for the XNNPACK backend.

Run by `deepthin export --format executorch` in .venv-export (scripts/setup_export.sh):

    executorch_export.py --model-dir DIR --out FILE --schedule 0,0,1,1 [--quant fp32|8da4w]
                         [--max-seq-len N] [--expand-shared]

The program's method `forward(tokens [1, 1] int64, input_pos [1] int64) -> logits [1, 1, vocab]`
decodes one token at the given position. Keys and values live in a static cache with one slot per
*effective* layer, so a block that runs twice keeps two sets; the block's weights exist once (the
module is reused), unless --expand-shared copies them per effective layer. Prints one JSON line.

Exit status 2 for bad input (a missing file, a config it cannot read), 1 for failures.
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def fail_input(msg):
    print(f"executorch_export: {msg}", file=sys.stderr)
    sys.exit(2)


class Config:
    """The fields of config.json the decoder needs (deepthin's extra section included)."""

    def __init__(self, j, where):
        try:
            self.vocab = int(j["vocab_size"])
            self.dim = int(j["hidden_size"])
            self.n_layers = int(j["num_hidden_layers"])
            self.n_heads = int(j["num_attention_heads"])
            self.n_kv = int(j.get("num_key_value_heads", self.n_heads))
            self.head_dim = int(j.get("head_dim") or self.dim // self.n_heads)
            self.ffn = int(j["intermediate_size"])
            self.eps = float(j.get("rms_norm_eps", 1e-6))
            rope = j.get("rope_parameters") or {}
            self.theta = float(rope.get("rope_theta", j.get("rope_theta", 10000.0)))
            self.max_seq = int(j.get("max_position_embeddings", 2048))
            self.tied = bool(j.get("tie_word_embeddings", False))
        except (KeyError, TypeError, ValueError) as e:
            fail_input(f"{where}: missing or bad field ({e})")
        d = j.get("deepthin") or {}
        self.ffn_type = d.get("ffn_type", "swiglu")
        self.norm_type = d.get("norm_type", "rmsnorm")


def rope_tables(head_dim, length, theta):
    """cos and sin [length, head_dim] for rotate-half RoPE, as deepthin builds them."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    inv_freq = 1.0 / torch.pow(torch.tensor(theta, dtype=torch.float32), exponent)
    freqs = torch.outer(torch.arange(length, dtype=torch.int64).to(torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), -1)
    return emb.cos(), emb.sin()


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), -1)


class Norm(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = cfg.norm_type == "layernorm"
        self.eps = cfg.eps
        self.weight = nn.Parameter(torch.ones(cfg.dim))
        if self.layer:
            self.bias = nn.Parameter(torch.zeros(cfg.dim))

    def forward(self, x):
        if self.layer:
            return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
        return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps))


class Attention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.h, self.kv, self.hd = cfg.n_heads, cfg.n_kv, cfg.head_dim
        self.q_proj = nn.Linear(cfg.dim, self.h * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.dim, self.kv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.dim, self.kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.h * self.hd, cfg.dim, bias=False)

    def forward(self, x, cos, sin, k_cache, v_cache, input_pos, valid):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, self.h, self.hd).transpose(1, 2)
        k = self.k_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.kv, self.hd).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k_cache[:, :, input_pos] = k
        v_cache[:, :, input_pos] = v
        # Grouped-query attention without copying k and v per query head: the query heads of each
        # kv head form one group, [b, kv, groups·t, hd] against [b, kv, S, hd].
        groups = self.h // self.kv
        qg = q.reshape(b, self.kv, groups * t, self.hd)
        scores = (qg @ k_cache.transpose(-1, -2)) / math.sqrt(self.hd)
        scores = scores.masked_fill(~valid[None, None, None, :], float("-inf"))
        # Cache rows not written yet get probability 0; their values are zeroed too, so that whatever
        # the runtime's memory held there cannot leak in (not even NaN · 0).
        values = torch.where(valid[None, None, :, None], v_cache, torch.zeros_like(v_cache))
        out = (torch.softmax(scores, dim=-1) @ values).reshape(b, self.h, t, self.hd)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, self.h * self.hd))


class Mlp(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.kind = cfg.ffn_type
        if self.kind == "swiglu":
            self.gate_proj = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.dim, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.dim, bias=False)

    def forward(self, x):
        if self.kind == "swiglu":
            return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))
        act = F.relu if self.kind == "relu" else F.gelu
        return self.down_proj(act(self.up_proj(x)))


class Block(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.input_layernorm = Norm(cfg)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = Norm(cfg)
        self.mlp = Mlp(cfg)

    def forward(self, x, cos, sin, k_cache, v_cache, input_pos, valid):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, input_pos, valid)
        return h + self.mlp(self.post_attention_layernorm(h))


class Decoder(nn.Module):
    """The MobileLLM decoder with a static KV cache per effective layer."""

    def __init__(self, cfg, schedule, max_seq, expand_shared=False):
        super().__init__()
        self.cfg = cfg
        self.schedule = list(range(len(schedule))) if expand_shared else list(schedule)
        self.source = list(schedule)  # physical block of each effective layer (for weights)
        n_blocks = len(schedule) if expand_shared else cfg.n_layers
        self.embed_tokens = nn.Embedding(cfg.vocab, cfg.dim)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(n_blocks))
        self.norm = Norm(cfg)
        if not cfg.tied:
            self.lm_head = nn.Linear(cfg.dim, cfg.vocab, bias=False)
        cos, sin = rope_tables(cfg.head_dim, max_seq, cfg.theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("positions", torch.arange(max_seq, dtype=torch.int64), persistent=False)
        for e in range(len(schedule)):
            shape = (1, cfg.n_kv, max_seq, cfg.head_dim)
            self.register_buffer(f"k_cache_{e}", torch.zeros(shape), persistent=False)
            self.register_buffer(f"v_cache_{e}", torch.zeros(shape), persistent=False)

    def load(self, tensors):
        """Weights from deepthin's safetensors (HF names; shared blocks stored once)."""
        own = {}
        for name, t in tensors.items():
            if name.startswith("model.layers."):
                rest = name[len("model.layers."):]
                b, tail = rest.split(".", 1)
                targets = [e for e, s in enumerate(self.source) if s == int(b)] \
                    if len(self.layers) != self.cfg.n_layers else [int(b)]
                for e in targets:
                    own[f"layers.{e}.{tail}"] = t
            elif name.startswith("model."):
                own[name[len("model."):]] = t
            else:
                own[name] = t
        if self.cfg.tied:
            own.pop("lm_head.weight", None)
        missing, unexpected = self.load_state_dict(own, strict=False)
        if missing or unexpected:
            fail_input(f"weights do not match the config: missing {missing}, unexpected {unexpected}")

    def caches(self, e):
        return getattr(self, f"k_cache_{e}"), getattr(self, f"v_cache_{e}")

    def forward(self, tokens, input_pos):
        x = self.embed_tokens(tokens)
        cos = self.rope_cos[input_pos].unsqueeze(0).unsqueeze(0)
        sin = self.rope_sin[input_pos].unsqueeze(0).unsqueeze(0)
        valid = self.positions <= input_pos[-1]
        for e, b in enumerate(self.schedule):
            k_cache, v_cache = self.caches(e)
            x = self.layers[b](x, cos, sin, k_cache, v_cache, input_pos, valid)
        x = self.norm(x)
        w = self.embed_tokens.weight if self.cfg.tied else self.lm_head.weight
        return F.linear(x, w)

    def reset_cache(self):
        for e in range(len(self.schedule)):
            for c in self.caches(e):
                c.zero_()


def build(model_dir, schedule, max_seq, expand_shared=False):
    """The eager decoder of a deepthin model directory, in fp32."""
    from safetensors.torch import load_file

    cfg_path = os.path.join(model_dir, "config.json")
    weights = os.path.join(model_dir, "model.safetensors")
    for p in (cfg_path, weights):
        if not os.path.exists(p):
            fail_input(f"{p} does not exist")
    with open(cfg_path) as f:
        cfg = Config(json.load(f), cfg_path)
    if max_seq > cfg.max_seq:
        fail_input(f"--max-seq-len {max_seq} exceeds max_position_embeddings {cfg.max_seq}")
    model = Decoder(cfg, schedule, max_seq, expand_shared)
    model.load({k: v.to(torch.float32) for k, v in load_file(weights).items()})
    return model.eval()


def quantize_8da4w(model):
    """torchao's 8-bit dynamic activations with 4-bit weights in groups of 32, on every nn.Linear."""
    from torchao.quantization import Int8DynamicActivationIntxWeightConfig, quantize_
    from torchao.quantization.granularity import PerGroup

    quantize_(model, Int8DynamicActivationIntxWeightConfig(weight_dtype=torch.int4,
                                                           weight_granularity=PerGroup(32)))
    return model


def lower(model):
    """torch.export → to_edge_transform_and_lower (XNNPACK) → ExecuTorch program bytes."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower

    example = (torch.zeros((1, 1), dtype=torch.int64), torch.zeros((1,), dtype=torch.int64))
    with torch.no_grad():
        ep = torch.export.export(model, example, strict=False)
        edge = to_edge_transform_and_lower(ep, partitioner=[XnnpackPartitioner()])
        return edge.to_executorch().buffer


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--schedule", required=True, help="physical block of each effective layer")
    ap.add_argument("--quant", default="fp32", choices=["fp32", "8da4w"])
    ap.add_argument("--max-seq-len", type=int, required=True)
    ap.add_argument("--expand-shared", action="store_true")
    a = ap.parse_args()
    schedule = [int(s) for s in a.schedule.split(",")]
    t0 = time.time()
    model = build(a.model_dir, schedule, a.max_seq_len, a.expand_shared)
    if a.quant == "8da4w":
        quantize_8da4w(model)
    program = lower(model)
    with open(a.out, "wb") as f:
        f.write(program)
    print(json.dumps({"out": a.out, "bytes": len(program), "quant": a.quant,
                      "kv_slots": len(schedule), "blocks": len(model.layers),
                      "max_seq_len": a.max_seq_len, "seconds": round(time.time() - t0, 1)}))


if __name__ == "__main__":
    main()
