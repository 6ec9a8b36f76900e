// deepthin eval RUN_OR_DIR --tasks LIST --data DIR | --perplexity TOKENS  [options]
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "eval/perplexity.h"
#include "eval/tasks.h"
#include "eval/zero_shot.h"
#include "kernels/fused.h"
#include "model/quant_sim.h"
#include "storage/model_dir.h"
#include "train/checkpoint.h"
#include "train/precision.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/log.h"
#include "util/paths.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {

namespace fs = std::filesystem;

std::vector<std::string> task_list(const std::string& spec) {
  if (spec == "all") return eval::known_tasks();
  std::vector<std::string> out;
  size_t pos = 0;
  while (pos <= spec.size()) {
    const auto comma = spec.find(',', pos);
    const auto name =
        spec.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
    if (!name.empty()) out.push_back(name);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  if (out.empty()) fail_input("--tasks is empty; name tasks separated by commas, or all");
  return out;
}

// All tokens of a prepared dataset's split, or of shard files.
std::vector<int64_t> read_tokens(const std::string& path, const std::string& split,
                                 int64_t max_tokens) {
  auto ds = data::TokenDataset::open(path, split);
  std::vector<int64_t> out;
  for (const auto& shard : ds->shards()) {
    int64_t n = shard->size();
    if (max_tokens > 0) n = std::min(n, max_tokens - static_cast<int64_t>(out.size()));
    if (n <= 0) break;
    const size_t at = out.size();
    out.resize(at + static_cast<size_t>(n));
    shard->read(0, n, out.data() + at);
  }
  return out;
}

void print_table(const std::vector<eval::TaskScore>& scores, const std::string& quant) {
  std::printf(
      "| task | items | acc | ± | acc_norm | ± | items/s |\n|---|---|---|---|---|---|---|\n");
  double acc = 0, norm = 0;
  for (const auto& s : scores) {
    std::printf("| %s | %lld | %.4f | %.4f | %.4f | %.4f | %.1f |\n", s.task.c_str(),
                static_cast<long long>(s.n), s.acc, s.acc_stderr, s.acc_norm, s.acc_norm_stderr,
                static_cast<double>(s.n) / std::max(1e-9, s.seconds));
    acc += s.acc;
    norm += s.acc_norm;
  }
  if (scores.size() > 1)
    std::printf("| **average** (%zu tasks) | | %.4f | | %.4f | | |\n", scores.size(),
                acc / static_cast<double>(scores.size()),
                norm / static_cast<double>(scores.size()));
  if (quant != "none") std::printf("(simulated %s quantization)\n", quant.c_str());
}

// The command's arguments.
Args eval_args() {
  return Args(
      "eval",
      "deepthin eval RUN_OR_DIR (--tasks LIST --data DIR | --perplexity TOKENS) [--limit N] "
      "[--device D] [--precision P] [--batch-tokens N] [--quant Q] [--truncate-left] [--json FILE]",
      "Zero-shot accuracy on the paper's eight common-sense tasks as lm-evaluation-harness 0.4 "
      "computes it (acc, acc_norm, their standard errors), or sliding-window perplexity of a token "
      "stream; optionally under simulated post-training quantization. Prints a table; --json "
      "writes "
      "the numbers (and a run directory gets eval.json / perplexity.json).",
      {"RUN_OR_DIR"},
      {{"tasks", "LIST",
        "Comma-separated tasks, or all: arc_easy, arc_challenge, boolq, piqa, siqa, hellaswag, "
        "openbookqa, winogrande"},
       {"data", "DIR", "Directory of <task>.jsonl files (scripts/get_eval_data.sh)"},
       {"perplexity", "TOKENS", "A prepared dataset (its --split) or shard files: perplexity"},
       {"split", "S", "Split of a prepared dataset for --perplexity (default val)"},
       {"seq-len", "N", "Perplexity window (default model.max_seq_len)"},
       {"stride", "N", "Perplexity stride (default half the window)"},
       {"max-tokens", "N", "Perplexity: score at most the first N tokens"},
       {"limit", "N", "Zero-shot: the first N items of each task"},
       {"shared-prefix-min", "N",
        "Zero-shot: run the choices' common prefix once when that saves N tokens (default 64 on "
        "the CPU; 0, never, on CUDA, where batching across items is faster)"},
       {"device", "D", "cpu, cuda, cuda:N or auto (default auto)"},
       {"precision", "P", "fp32 or bf16 (default fp32 on the CPU, bf16 on CUDA)"},
       {"batch-tokens", "N", "Padded tokens per forward pass (default 16384)"},
       {"quant", "Q", "Simulated quantization: none (default), w8a8, w8a16, w4a16-g32"},
       {"truncate-left", "",
        "Cut requests longer than model.max_seq_len from the left (lm-eval's "
        "behaviour) instead of failing"},
       {"tokenizer", "FILE",
        "SentencePiece model (default: the model directory's tokenizer.model)"},
       {"json", "FILE", "Write the results as JSON to FILE"}});
}

// The checked options of one evaluation.
struct EvalJob {
  bool zero_shot = false;
  model::QuantSim quant{};
  c10::Device device{c10::kCPU};
  train::Precision precision{};
  int64_t batch_tokens = 0;
  int64_t limit = 0;
  fs::path arg_dir;  // as given: a run or a model directory
  fs::path dir;      // the model directory read
  bool is_run = false;
};

// Options are checked, and --json may be written, before anything is read.
EvalJob check_options(const Args& args) {
  EvalJob job;
  const bool zero_shot = args.has("tasks"), ppl = args.has("perplexity");
  if (zero_shot == ppl)
    fail_input("deepthin eval: give --tasks LIST --data DIR (zero-shot) or --perplexity TOKENS");
  if (zero_shot && !args.has("data"))
    fail_input("deepthin eval: --tasks needs --data DIR, the directory of <task>.jsonl files");
  job.zero_shot = zero_shot;
  job.quant = model::parse_quant_sim(args.get("quant", "none"));
  job.device = train::parse_device(args.get("device", "auto"));
  job.precision = args.has("precision")  ? train::parse_precision(args.get("precision"))
                  : job.device.is_cuda() ? train::Precision::bf16
                                         : train::Precision::fp32;
  job.batch_tokens = args.get_int("batch-tokens", 16384, 1, INT64_MAX);
  job.limit = args.get_int("limit", 0, 0, INT64_MAX);
  if (job.batch_tokens < 1 || job.limit < 0)
    fail_input("deepthin eval: --batch-tokens must be ≥ 1 and --limit ≥ 0");

  job.arg_dir = args.positional(0);
  job.dir = train::model_dir_of(job.arg_dir, "deepthin eval");
  // --json FILE replaces only an earlier result of deepthin eval (never a file it did not write).
  if (args.has("json"))
    check_output(args.get("json"),
                 OutputKind{"a deepthin eval result",
                            false,
                            {},
                            "",
                            [](const fs::path& p) {
                              return read_prefix(p, 16).rfind("{\n \"model\":", 0) == 0;
                            }},
                 OutputRules{"deepthin eval", "--json", /*force=*/true, {job.dir, job.arg_dir}});
  job.is_run = fs::is_directory(job.arg_dir / "checkpoints");
  return job;
}

// The model on its device, in eval mode, under the simulated quantization.
storage::LoadedModel load_model(const EvalJob& job) {
  auto loaded = storage::load_model_dir(job.dir);
  model::apply_quant_sim(loaded.model, job.quant);
  // Simulated activation quantization lives in the plain layers: the fused path is switched off.
  kernels::set_mode(job.quant == model::QuantSim::none ? kernels::Mode::auto_
                                                       : kernels::Mode::reference);
  loaded.model->to(job.device);
  loaded.model->eval();
  return loaded;
}

// The file a run directory gets: eval.json, perplexity-w8a8.json, …
fs::path default_json_path(const EvalJob& job, const std::string& stem) {
  return job.arg_dir / (stem +
                        (job.quant == model::QuantSim::none
                             ? ""
                             : std::string("-") + model::quant_sim_name(job.quant)) +
                        ".json");
}

// Each item's log-likelihoods and predictions, per task.
Json per_item_json(const std::vector<eval::TaskScore>& scores) {
  Json per_item = Json::object();
  for (const auto& s : scores) {
    Json items = Json::array();
    for (const auto& it : s.items) {
      Json j = Json::object();
      Json ll = Json::array();
      for (double v : it.loglik) ll.push_back(v);
      j["loglik"] = std::move(ll);
      j["pred"] = it.pred;
      j["pred_norm"] = it.pred_norm;
      j["gold"] = it.gold;
      items.push_back(std::move(j));
    }
    per_item[s.task] = std::move(items);
  }
  return per_item;
}

// Zero-shot accuracy: the table on stdout, the scores and items into `out`.
void run_zero_shot(const Args& args, const EvalJob& job, const std::vector<eval::Task>& tasks,
                   storage::LoadedModel& loaded, Json& out) {
  const fs::path tok_path =
      args.has("tokenizer") ? fs::path(args.get("tokenizer")) : job.dir / "tokenizer.model";
  if (!fs::exists(tok_path))
    fail_input("deepthin eval: " + job.dir.string() +
               " holds no tokenizer.model; pass --tokenizer");
  auto tok = data::Tokenizer::load(tok_path);
  eval::ZeroShotOptions o;
  o.precision = job.precision;
  o.batch_tokens = job.batch_tokens;
  o.truncate_left = args.has("truncate-left");
  o.shared_prefix_min =
      args.get_int("shared-prefix-min", job.device.is_cuda() ? 0 : 64, 0, INT64_MAX);
  auto last = std::chrono::steady_clock::now();
  const auto start = last;
  o.progress = [&](const std::string& task, int64_t done, int64_t total) {
    const auto now = std::chrono::steady_clock::now();
    if (done < total && std::chrono::duration<double>(now - last).count() < 2.0) return;
    last = now;
    log::info("{}: {}/{} items ({} s)", task, done, total,
              log::fixed(std::chrono::duration<double>(now - start).count(), 1));
  };
  auto scores = eval::score_tasks(loaded.model, tok, tasks, o);
  print_table(scores, model::quant_sim_name(job.quant));
  out["tasks"] = eval::zero_shot_json(scores);
  out["items"] = per_item_json(scores);
}

// Sliding-window perplexity: a line on stdout, the numbers into `out`.
void run_perplexity(const Args& args, const EvalJob& job, storage::LoadedModel& loaded, Json& out) {
  const auto quant = job.quant;
  eval::PerplexityOptions o;
  o.window = args.get_int("seq-len", 0, 0, INT64_MAX);
  o.stride = args.get_int("stride", 0, 0, INT64_MAX);
  o.precision = job.precision;
  o.batch_windows = std::max<int64_t>(
      1, job.batch_tokens /
             std::max<int64_t>(1, o.window > 0 ? o.window : loaded.config.model.max_seq_len));
  auto tokens = read_tokens(args.get("perplexity"), args.get("split", "val"),
                            args.get_int("max-tokens", 0, 0, INT64_MAX));
  for (int64_t t : tokens)
    if (t >= loaded.config.model.vocab_size)
      fail_input(args.get("perplexity") + " holds token id " + std::to_string(t) +
                 " but model.vocab_size is " + std::to_string(loaded.config.model.vocab_size));
  auto r = eval::sliding_perplexity(loaded.model, tokens, o);
  if (!std::isfinite(r.nll) || !std::isfinite(r.ppl))
    fail_runtime("deepthin eval: the perplexity of " + job.dir.string() + " is not finite (NLL " +
                 std::to_string(r.nll) +
                 "): the model's weights or its precision overflow; nothing is written");
  std::printf("perplexity %.4f (mean NLL %.5f nats) over %s tokens in %lld windows, %.1f s%s\n",
              r.ppl, r.nll, group_digits(r.tokens).c_str(), static_cast<long long>(r.windows),
              r.seconds,
              quant == model::QuantSim::none
                  ? ""
                  : (std::string(" (simulated ") + model::quant_sim_name(quant) + ")").c_str());
  Json p = Json::object();
  p["ppl"] = r.ppl;
  p["nll"] = r.nll;
  p["tokens"] = r.tokens;
  p["windows"] = r.windows;
  p["seconds"] = r.seconds;
  p["data"] = args.get("perplexity");
  out["perplexity"] = std::move(p);
}

}  // namespace

int run_eval(const Argv& argv) {
  Args args = eval_args();
  if (!args.parse(argv)) return 0;
  const EvalJob job = check_options(args);
  // Tasks are read (and checked) before the model is loaded.
  std::vector<eval::Task> tasks;
  if (job.zero_shot)
    for (const auto& name : task_list(args.get("tasks")))
      tasks.push_back(eval::load_task(name, args.get("data"), job.limit));
  auto loaded = load_model(job);

  Json out = Json::object();
  out["model"] = job.dir.string();
  out["device"] = job.device.str();
  out["precision"] = train::precision_name(job.precision);
  out["quant"] = model::quant_sim_name(job.quant);
  if (job.zero_shot)
    run_zero_shot(args, job, tasks, loaded, out);
  else
    run_perplexity(args, job, loaded, out);
  const fs::path default_json = default_json_path(job, job.zero_shot ? "eval" : "perplexity");
  const std::string text = json::dump(out, 1) + "\n";
  if (args.has("json")) write_file_atomic(args.get("json"), text);
  if (job.is_run) write_file_atomic(default_json, text);
  return 0;
}

}  // namespace deepthin::cli
