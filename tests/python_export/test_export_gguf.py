"""GGUF files written by `deepthin export --format gguf`, run by llama.cpp itself (llama-cpp-python)
and read by the llama.cpp project's own `gguf` package.

For every model of fixtures.MODELS (GQA/MQA, tied/untied, three sharing schemes) and every type:
- llama.cpp's next-token log-probabilities against `deepthin score` on the same sequences: f32 within
  1e-4; f16 and bf16 within the bounds below; q8_0 and q4_0 against deepthin scoring the weights
  dequantized from the file (so the test checks the file, not the quantization error), on the mean
  and max |Δ log-prob|;
- f32: greedy generation of 32 tokens equals `deepthin generate --temperature 0`;
- the embedded tokenizer gives the SentencePiece model's ids;
- the gguf reader lists exactly the expected keys and tensors, with the expected types.
"""
import json
import os
import sys
import tempfile

import numpy as np
import sentencepiece as spm
import torch
from gguf import GGUFReader
from gguf.quants import dequantize
from llama_cpp import Llama
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fixtures  # noqa: E402

# max |Δ log-prob| bounds, and mean bounds for the quantized types (measured values are printed).
# For q8_0 and q4_0 the remaining difference is llama.cpp quantizing the activations to 8 bits for
# its integer dot products (measured: max 0.03–0.05, mean ≈0.01 on these models).
MAX = {"f32": 1e-4, "f16": 1e-2, "bf16": 6e-2, "q8_0": 1e-1, "q4_0": 1e-1}
MEAN = {"f16": 2e-3, "bf16": 1.5e-2, "q8_0": 2.5e-2, "q4_0": 2.5e-2}
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]


def llama(path):
    # f32 keys and values in the KV cache, so that the cache does not add f16 rounding.
    return Llama(path, n_ctx=256, logits_all=True, type_k=0, type_v=0, n_threads=2, verbose=False)


def log_softmax(x):
    x = np.asarray(x, dtype=np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def llama_logprobs(llm, seqs):
    out = []
    for seq in seqs:
        llm.reset()
        llm.eval(seq)
        lp = log_softmax(llm.scores[: len(seq)])
        out.append([lp[t, seq[t + 1]] for t in range(len(seq) - 1)])
    return out


def deltas(a, b):
    d = np.concatenate([np.abs(np.array(x) - np.array(y)) for x, y in zip(a, b)])
    return float(d.max()), float(d.mean())


def uninterleave(w, heads):
    """Undo llama.cpp's adjacent-pair row order of attn_q / attn_k (back to rotate-half)."""
    rows, cols = w.shape
    hd = rows // heads
    return w.reshape(heads, hd // 2, 2, cols).transpose(0, 2, 1, 3).reshape(rows, cols)


def dequantized_dir(gguf_path, out_dir):
    """A plain Llama directory (HF names, config.json) holding the file's weights, dequantized."""
    r = GGUFReader(gguf_path)
    f = {k: v.parts[v.data[0]] for k, v in r.fields.items() if v.data}
    n_heads = int(f["llama.attention.head_count"][0])
    n_kv = int(f["llama.attention.head_count_kv"][0])
    blocks = int(f["llama.block_count"][0])
    names = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
             "output.weight": "lm_head.weight"}
    parts = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_norm": "post_attention_layernorm", "ffn_gate": "mlp.gate_proj",
             "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    tensors = {}
    for t in r.tensors:
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32)
        w = w.reshape([int(d) for d in reversed(t.shape)])
        if t.name.startswith("blk."):
            _, i, part, _ = t.name.split(".")
            if part == "attn_q":
                w = uninterleave(w, n_heads)
            if part == "attn_k":
                w = uninterleave(w, n_kv)
            name = f"model.layers.{i}.{parts[part]}.weight"
        else:
            name = names[t.name]
        tensors[name] = torch.from_numpy(np.array(w, dtype=np.float32, copy=True))
    os.makedirs(out_dir)
    save_file(tensors, os.path.join(out_dir, "model.safetensors"))
    emb = tensors["model.embed_tokens.weight"]
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
           "vocab_size": emb.shape[0], "hidden_size": emb.shape[1],
           "intermediate_size": int(f["llama.feed_forward_length"][0]), "num_hidden_layers": blocks,
           "num_attention_heads": n_heads, "num_key_value_heads": n_kv,
           "head_dim": int(f["llama.attention.key_length"][0]),
           "max_position_embeddings": int(f["llama.context_length"][0]),
           "rms_norm_eps": float(f["llama.attention.layer_norm_rms_epsilon"][0]),
           "rope_theta": float(f["llama.rope.freq_base"][0]),
           "tie_word_embeddings": "lm_head.weight" not in tensors}
    with open(os.path.join(out_dir, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    return out_dir


def expected_tensors(cfg_blocks, tied):
    names = ["token_embd.weight"]
    for e in range(cfg_blocks):
        names += [f"blk.{e}.{p}.weight" for p in ("attn_norm", "attn_q", "attn_k", "attn_v",
                                                  "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                                                  "ffn_down")]
    names.append("output_norm.weight")
    if not tied:
        names.append("output.weight")
    return names


EXPECTED_KEYS = {
    "GGUF.version", "GGUF.tensor_count", "GGUF.kv_count", "general.architecture", "general.name",
    "general.alignment", "general.file_type", "llama.vocab_size", "llama.context_length",
    "llama.embedding_length", "llama.block_count", "llama.feed_forward_length",
    "llama.attention.head_count", "llama.attention.head_count_kv", "llama.attention.key_length",
    "llama.attention.value_length", "llama.rope.dimension_count", "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon", "tokenizer.ggml.model", "tokenizer.ggml.tokens",
    "tokenizer.ggml.scores", "tokenizer.ggml.token_type", "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.add_bos_token",
    "tokenizer.ggml.add_eos_token", "tokenizer.ggml.add_space_prefix"}


def check_reader(path, quant, name, tied, blocks, failures):
    r = GGUFReader(path)
    keys = set(r.fields)
    want = EXPECTED_KEYS | ({"general.quantization_version"} if quant in ("q8_0", "q4_0") else set())
    if keys != want:
        failures.append(f"{name} {quant}: keys differ: extra {keys - want}, missing {want - keys}")
    names = [t.name for t in r.tensors]
    if names != expected_tensors(blocks, tied):
        failures.append(f"{name} {quant}: tensors {names}")
    for t in r.tensors:
        one_d = len(t.shape) == 1
        outer = t.name in ("token_embd.weight", "output.weight")
        want_type = "F32" if one_d else {"f32": "F32", "f16": "F16", "bf16": "BF16", "q8_0": "Q8_0",
                                          "q4_0": "Q8_0" if outer else "Q4_0"}[quant]
        if t.tensor_type.name != want_type:
            failures.append(f"{name} {quant}: {t.name} is {t.tensor_type.name}, expected {want_type}")


def main():
    cli = fixtures.cli_arg()
    failures = []
    with tempfile.TemporaryDirectory() as work:
        tok = fixtures.tokenizer(cli, work)
        sp = spm.SentencePieceProcessor(model_file=tok)
        tokens_file = os.path.join(work, "tokens.txt")
        seqs = fixtures.token_lines(tokens_file, 3, 48, seed=5)
        print(f"{'model':16} {'type':5} {'bytes':>9} {'max|Δ|':>9} {'mean|Δ|':>9}  reference")
        for name, over in fixtures.MODELS.items():
            mdir = fixtures.model(cli, work, name, tok)
            want = fixtures.score(cli, mdir, tokens_file)
            tied = over["tie_embeddings"]
            blocks = 2 * over.get("layer_sharing", {}).get("repeats", 1)
            for quant in TYPES:
                path = os.path.join(work, f"{name}.{quant}.gguf")
                rep = fixtures.export(cli, mdir, "gguf", path, quant)
                if rep["block_count"] != blocks:
                    failures.append(f"{name} {quant}: block_count {rep['block_count']} != {blocks}")
                check_reader(path, quant, name, tied, blocks, failures)
                llm = llama(path)
                got = llama_logprobs(llm, seqs)
                ref, against = want, "deepthin score"
                if quant in ("q8_0", "q4_0"):
                    ref = fixtures.score(cli, dequantized_dir(path, os.path.join(work, f"{name}.{quant}.deq")),
                                         tokens_file)
                    against = "deepthin score of the dequantized weights"
                mx, mean = deltas(got, ref)
                print(f"{name:16} {quant:5} {os.path.getsize(path):9d} {mx:9.2e} {mean:9.2e}  {against}")
                if mx > MAX[quant] or mean > MEAN.get(quant, MAX[quant]):
                    failures.append(f"{name} {quant}: max |Δ log-prob| {mx:.3e} (bound {MAX[quant]}), "
                                    f"mean {mean:.3e} (bound {MEAN.get(quant, MAX[quant])})")
                if quant == "f32":
                    # Greedy generation, and the embedded tokenizer.
                    for prompt in fixtures.PROMPTS[:2]:
                        ref_gen = fixtures.generate(cli, mdir, prompt, 32)
                        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
                        if ids != ref_gen["prompt_ids"]:
                            failures.append(f"{name}: llama.cpp prompt ids {ids} != {ref_gen['prompt_ids']}")
                        llm.reset()
                        llm.eval(ids)
                        gen = []
                        for _ in range(32):
                            nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
                            gen.append(nxt)
                            if nxt == sp.eos_id():
                                break
                            llm.eval([nxt])
                        if gen != ref_gen["ids"]:
                            failures.append(f"{name}: greedy llama.cpp {gen} != deepthin {ref_gen['ids']}")
                    if name == "gqa_tied":
                        for text in fixtures.PROMPTS:
                            a = llm.tokenize(text.encode(), add_bos=False, special=False)
                            b = sp.encode(text)
                            if a != b:
                                failures.append(f"tokenizer: llama.cpp {a} != SentencePiece {b} for {text!r}")
                del llm
    fixtures.finish(failures, "all GGUF checks passed")


if __name__ == "__main__":
    main()
