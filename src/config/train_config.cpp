#include "config/train_config.h"

#include <cmath>

#include "util/paths.h"

namespace deepthin::config {

void RunConfig::visit(Visitor& v) {
  v.field("name", name, "Run name; empty means the config file's name without extension");
  v.field("root", root, "Directory that holds runs; a run writes <root>/<name>/");
}

void RunConfig::check(const Checker& c) const {
  if (name.empty()) return;
  const std::string why = path_component_problem(name);
  c.require(why.empty(), "name",
            "'" + name.substr(0, 80) + "' is not a valid run name: " + why +
                " (a run name is one directory name under run.root: 1-128 bytes, no '/', '\\', "
                "control characters, '.' or '..')");
}

void DataConfig::visit(Visitor& v) {
  v.field("path", path,
          "Training tokens: a prepared directory (train split), a glob of shards (llm.c .bin too) "
          "or one shard");
  v.field("val_path", val_path,
          "Validation tokens when path is not a prepared directory; empty uses its val split");
  v.field("tokenizer", tokenizer,
          "SentencePiece model: checked against the dataset manifest and copied into checkpoints");
  v.field("prefetch", prefetch, "Batches the loader's background thread keeps ready", kNonNegative);
  v.sections("sources", sources,
             "A weighted mixture of sources instead of path: each {name, path, weight, val_path}; "
             "sampled in proportion to the weights in tokens, each source shuffled and served once "
             "per epoch");
  v.field("allow_mixture_change", allow_mixture_change,
          "Resume a run whose sources or weights changed: each source continues where it was "
          "(otherwise refused)");
}

void DataSource::visit(Visitor& v) {
  v.field("name", name, "Name of the source in logs, metrics and checkpoints (one path component)");
  v.field("path", path, "Its training tokens: a prepared directory, a glob of shards or one shard");
  v.field("val_path", val_path,
          "Its validation tokens when path is not a prepared directory; empty uses its val split");
  v.field("weight", weight, "Its share of the training tokens, relative to the other sources",
          kPositiveReal);
}

void DataSource::check(const Checker& c) const {
  const std::string why = path_component_problem(name);
  c.require(why.empty(), "name",
            "'" + name.substr(0, 80) + "' is not a valid source name: " + why +
                " (a source name is one path component: 1-128 bytes, no '/', '\\', control "
                "characters, '.' or '..')");
  c.require(!path.empty(), "path", "every source needs a path");
  c.require(std::isfinite(weight) && weight > 0, "weight", "must be a finite number > 0");
}

std::vector<DataSource> data_sources(const DataConfig& d) {
  if (!d.sources.empty()) return d.sources;
  DataSource one;
  one.path = d.path;
  one.val_path = d.val_path;
  return {one};
}

void DataConfig::check(const Checker& c) const {
  c.require(path.empty() || sources.empty(), "sources",
            "set either data.path (one source) or data.sources (a mixture), not both (when a base "
            "config sets data.path, write path: \"\" beside the sources)");
  c.require(val_path.empty() || sources.empty(), "val_path",
            "with data.sources, give each source its own val_path");
  for (size_t i = 0; i < sources.size(); ++i)
    for (size_t j = 0; j < i; ++j)
      c.require(sources[i].name != sources[j].name, "sources",
                "two sources are named '" + sources[i].name + "'; names must be unique");
}

void TrainConfig::visit(Visitor& v) {
  v.field("micro_batch_size", micro_batch_size, "Sequences per device per micro-step",
          IntRange{1, 1 << 20});
  v.field("grad_accum_steps", grad_accum_steps, "Micro-steps accumulated per optimizer step",
          kPositive);
  v.field("seq_len", seq_len, "Tokens per training sequence; 0 means model.max_seq_len",
          IntRange{0, 1 << 20});
  v.field("max_steps", max_steps, "Optimizer steps to train; 0 derives them from max_tokens",
          kNonNegative);
  v.field("max_tokens", max_tokens, "Tokens to train on (all ranks); used when max_steps is 0",
          kNonNegative);
  v.field("seed", seed, "Seed of the initialisation and the data order", kNonNegative);
  v.choice("precision", precision, kPrecisions,
           "bf16 autocast with fp32 master weights and optimizer state, or fp32; auto is bf16 on "
           "CUDA and fp32 on CPU");
  v.field("device", device,
          "auto, cpu, cuda or cuda:N (under a launcher each rank takes its local GPU)");
  v.field("grad_clip", grad_clip, "Clip the global gradient norm to this; 0 disables clipping",
          RealRange{0.0});
  v.field("max_bad_steps", max_bad_steps,
          "Stop after this many non-finite steps in a row (each is skipped)", kPositive);
  v.field("loss_chunk_tokens", loss_chunk_tokens,
          "Tokens per chunk of the fused LM-head cross-entropy", kPositive);
  v.field("peak_tflops", peak_tflops,
          "Peak dense bf16 TFLOP/s per device for MFU; 0 looks the GPU up (H100/H200/A100)",
          RealRange{0.0});
  v.choice("kernels", kernels, kKernelChoices,
           "fused: on GPUs the project's CUDA kernels (residual add + RMSNorm, RoPE fused with the "
           "q|k|v split, SwiGLU, in-place LM-head cross-entropy), fused q|k|v and gate|up "
           "products from bf16 weight copies kept across steps; reference: the plain layers (the "
           "CPU always runs these)");
  v.choice("activation_checkpointing", activation_checkpointing, kRecomputeChoices,
           "Recompute blocks in backward instead of keeping their activations: none, selective "
           "(every activation_checkpointing_every-th effective layer) or full (every layer)");
  v.field("activation_checkpointing_every", activation_checkpointing_every,
          "selective checkpointing recomputes every Nth effective layer", kPositive);
  v.choice(
      "cuda_graph", cuda_graph, kGraphChoices,
      "Capture the whole training step (forward, backward, clipping, AdamW) as one CUDA graph "
      "after two uncaptured steps and replay it: no host synchronisation inside the step and no "
      "per-kernel launch cost. auto: on a single CUDA device without a teacher; on: the same, "
      "and an error where it cannot apply; off: the host-synchronised eager step");
  v.field("swiglu_recompute", swiglu_recompute,
          "Fused path: recompute silu(gate)·up in backward instead of keeping it for the down "
          "projection's gradient: one [tokens × ffn hidden] bf16 tensor less per layer (a sixth "
          "of the 125M's activations) for about 1.5% of the step time");
}

void OptimizerConfig::visit(Visitor& v) {
  v.field("lr", lr, "Peak learning rate of AdamW", kPositiveReal);
  v.field("betas", betas, "AdamW beta1, beta2", 2, RealRange{0.0, 0.999999});
  v.field("eps", eps, "AdamW epsilon", kPositiveReal);
  v.field("weight_decay", weight_decay, "Decoupled weight decay", RealRange{0.0});
  v.field("no_decay", no_decay,
          "Parameters whose name contains any of these are exempt from weight decay");
}

void ScheduleConfig::visit(Visitor& v) {
  v.choice("type", type, kSchedules,
           "Learning-rate shape after warmup: cosine or linear decay to min_lr_ratio, "
           "warmup-stable-decay, or constant");
  v.field("warmup_steps", warmup_steps, "Linear warmup steps from 0 to the peak", kNonNegative);
  v.field("min_lr_ratio", min_lr_ratio, "Final learning rate as a fraction of the peak",
          kUnitInterval);
  v.field("decay_fraction", decay_fraction,
          "wsd: fraction of the steps spent in the final linear decay", kUnitInterval);
}

void EvalConfig::visit(Visitor& v) {
  v.field("every", every, "Validate every this many steps (and at the end); 0 only at the end",
          kNonNegative);
  v.field("batches", batches, "Validation batches per evaluation", kPositive);
  v.field("tasks", tasks,
          "Zero-shot tasks (deepthin eval's: arc_easy, boolq, …, or all) scored on the live model "
          "while training; accuracies go to metrics.jsonl and TensorBoard");
  v.field("tasks_every", tasks_every, "Score eval.tasks every this many steps (and at the end)",
          kNonNegative);
  v.field("tasks_items", tasks_items, "Items per task for eval.tasks; 0 takes every item",
          kNonNegative);
  v.field("tasks_data", tasks_data,
          "Directory of the task files for eval.tasks (scripts/get_eval_data.sh writes them)");
}

void EvalConfig::check(const Checker& c) const {
  c.require(tasks.empty() || !tasks_data.empty(), "tasks_data",
            "eval.tasks needs eval.tasks_data: the directory of the task files");
}

void CheckpointConfig::visit(Visitor& v) {
  v.field("every", every, "Checkpoint every this many steps (and at the end); 0 only at the end",
          kNonNegative);
  v.field("keep_last", keep_last, "Checkpoints kept; older ones are deleted", kPositive);
  v.field("at_end", at_end,
          "Checkpoint when the run ends (turn off for throughput benchmarks; stops on a signal or "
          "--until-step still checkpoint)");
  v.field("async", async,
          "Write checkpoints in a background thread: the step only copies the state to host memory "
          "(pinned on GPUs), and waits for a previous write only if it is still running; files, "
          "checksums and atomic publication are as with false (the step writes them itself)");
}

void KdConfig::visit(Visitor& v) {
  v.field(
      "teacher", teacher,
      "Distill from this teacher: a deepthin run (its newest checkpoint) or model directory, or "
      "a Hugging Face Llama directory (config.json + safetensors). Empty: no distillation");
  v.choice("loss", loss, kKdLosses,
           "forward_kl: the paper's soft-label cross-entropy −Σ p_teacher·log p_student; "
           "reverse_kl: KL(student‖teacher); symmetric_kl: the mean of both KLs; js: "
           "Jensen-Shannon");
  v.field("temperature", temperature,
          "Softmax temperature of both distributions; the KD term is scaled by T²", kPositiveReal);
  v.field("ratio", ratio,
          "Loss = (1 − ratio)·next-token CE + ratio·KD; 0 trains without the teacher",
          kUnitInterval);
  v.field(
      "device", device,
      "Device of the teacher (e.g. cuda:1); empty: the student's. bf16 on GPUs, fp32 on the CPU");
  v.field("cache", cache,
          "Distill from the teacher's top-k log-probabilities written by `deepthin kd cache` "
          "instead of running the teacher (forward_kl; the teacher is not loaded). Empty: run "
          "kd.teacher");
}

void DistributedConfig::visit(Visitor& v) {
  v.choice("backend", backend, kDistBackends,
           "Collective backend: nccl for CUDA devices, gloo for CPU processes; auto picks by "
           "device");
  v.field("bucket_mb", bucket_mb,
          "Gradients are averaged in buckets of this many MB, each launched from the backward "
          "pass as soon as it is full",
          kPositiveReal);
  v.field("zero1", zero1,
          "ZeRO-1: shard the AdamW moments across ranks (each rank updates its slice of the "
          "parameters, then all gather them)");
  v.field("timeout_s", timeout_s,
          "Seconds a collective may wait for the other ranks before the run fails (a dead or "
          "stalled rank)",
          kPositive);
}

void LogConfig::visit(Visitor& v) {
  v.field("every", every, "Log training metrics every this many steps", kPositive);
  v.field("tensorboard", tensorboard, "Also write metrics as TensorBoard event files");
}

}  // namespace deepthin::config
