// deepthin train CONFIG [--set …] [--resume RUN_DIR] [--resume-fallback] [--until-step N]
#include <torch/csrc/autograd/grad_mode.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "data/tokenizer.h"
#include "eval/tasks.h"
#include "eval/zero_shot.h"
#include "train/device_info.h"
#include "train/precision.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/json_io.h"

namespace deepthin::cli {

namespace {

// The plan of `train --dry-run`: one line per source.
int dry_run(const config::Config& cfg, const Args& args) {
  const char* env = std::getenv("WORLD_SIZE");
  const int64_t fallback = env ? std::atoll(env) : 1;
  const int world = static_cast<int>(args.get_int("world-size", fallback > 0 ? fallback : 1, 1, 1 << 20));
  const auto plan = train::plan_data(cfg, world);
  std::printf("%-24s %10s %8s %16s %16s %10s\n", "source", "weight", "share", "tokens",
              "tokens read", "epochs");
  for (const auto& p : plan)
    std::printf("%-24s %10g %7.2f%% %16lld %16.0f %10.3f\n", p.name.c_str(), p.weight,
                100 * p.share, static_cast<long long>(p.tokens), p.tokens_read, p.epochs);
  std::printf("(a run of %d rank%s, train.seq_len %lld; each source is shuffled and served once per "
              "epoch)\n",
              world, world == 1 ? "" : "s", static_cast<long long>(cfg.train.seq_len));
  return 0;
}

// eval.tasks: the task files and the tokenizer are loaded once, before training; the trainer calls
// back at the steps asked and logs what this returns (deepthin eval's numbers on the live model,
// with deepthin eval's defaults for the device).
std::function<Json(model::Decoder&)> task_evaluator(const config::Config& cfg) {
  const auto& e = cfg.eval;
  if (e.tasks.empty()) return {};
  if (cfg.data.tokenizer.empty())
    fail_input("eval.tasks needs data.tokenizer: the tasks' text is tokenized with it");
  auto tok = std::make_shared<data::Tokenizer>(data::Tokenizer::load(cfg.data.tokenizer));
  auto tasks = std::make_shared<std::vector<eval::Task>>();
  for (const auto& name : e.tasks.size() == 1 && e.tasks[0] == "all" ? eval::known_tasks() : e.tasks)
    tasks->push_back(eval::load_task(name, e.tasks_data, e.tasks_items));
  const auto device = train::parse_device(cfg.train.device);
  eval::ZeroShotOptions o;
  o.precision = train::resolve_precision(cfg.train.precision, device);
  o.shared_prefix_min = device.is_cuda() ? 0 : 64;
  return [tok, tasks, o](model::Decoder& m) {
    torch::NoGradGuard no_grad;
    return eval::zero_shot_json(eval::score_tasks(m, *tok, *tasks, o));
  };
}

}  // namespace

int run_train(const Argv& argv) {
  Args args(
      "train",
      "deepthin train CONFIG [--set KEY=VALUE]... [--resume RUN_DIR] [--resume-fallback] "
      "[--until-step N] [--dry-run [--world-size N]]",
      "Train a model. Writes runs/<name>/: config.yaml, train.log, metrics.jsonl, tensorboard/, "
      "checkpoints/step_N/. --resume continues from the newest valid checkpoint (CONFIG may then "
      "be "
      "omitted: the run's config.yaml is used). SIGINT/SIGTERM checkpoint and stop cleanly.",
      {},
      {set_option(),
       {"resume", "RUN_DIR", "Continue this run from its newest valid checkpoint"},
       {"resume-fallback", "", "If the newest checkpoint is corrupt, resume from the one before"},
       {"until-step", "N", "Checkpoint and stop once step N is reached (resume later)"},
       {"dry-run", "",
        "Open and check the data, print what the run would read of each source (its share of "
        "the tokens and how many epochs), and stop; nothing is written"},
       {"world-size", "N", "Ranks the dry run plans for (default: WORLD_SIZE, else 1)"}});
  // CONFIG is optional with --resume: accept zero or one positional argument.
  std::string config_path;
  Argv rest;
  for (size_t i = 0; i < argv.size(); ++i) {
    const auto& a = argv[i];
    bool takes_value =
        a == "--set" || a == "--resume" || a == "--until-step" || a == "--world-size";
    if (a.rfind("--", 0) != 0 && config_path.empty() &&
        (i == 0 || argv[i - 1].rfind("--", 0) != 0 || argv[i - 1].find('=') != std::string::npos ||
         argv[i - 1] == "--resume-fallback" || argv[i - 1] == "--dry-run")) {
      config_path = a;
      continue;
    }
    rest.push_back(a);
    if (takes_value && i + 1 < argv.size()) rest.push_back(argv[++i]);
  }
  if (!args.parse(rest)) return 0;
  train::TrainOptions opts;
  opts.resume = args.has("resume");
  opts.resume_fallback = args.has("resume-fallback");
  opts.until_step = args.get_int("until-step", 0, 0, INT64_MAX);
  config::Config cfg;
  if (!config_path.empty()) {
    cfg = config::load_config(config_path, args.all("set"));
    opts.run_dir = opts.resume ? std::filesystem::path(args.get("resume"))
                               : train::run_directory(cfg, config_path);
  } else if (opts.resume) {
    opts.run_dir = args.get("resume");
    auto saved = opts.run_dir / "config.yaml";
    if (!std::filesystem::exists(saved))
      fail_input("deepthin train --resume: " + saved.string() + " not found; is " +
                 opts.run_dir.string() + " a run directory?");
    cfg = config::load_config(saved, args.all("set"));
  } else {
    fail_input(
        "deepthin train: a CONFIG file is required (or --resume RUN_DIR)\nusage: deepthin train "
        "CONFIG [options]");
  }
  if (args.has("dry-run")) return dry_run(cfg, args);
  opts.evaluate_tasks = task_evaluator(cfg);
  auto r = train::train(cfg, opts);
  if (r.rank != 0) return 0;  // rank 0 reports for the job
  Json j = Json::object();
  j["run_dir"] = opts.run_dir.string();
  j["steps"] = r.steps;
  j["tokens"] = r.tokens;
  j["final_loss"] = r.final_loss;
  j["val_loss"] = r.val_loss;
  j["interrupted"] = r.interrupted;
  j["goodput"] = r.goodput;
  if (r.tokens_by_source.size() > 1) {
    Json t = Json::object();
    for (const auto& [name, tokens] : r.tokens_by_source) t[name] = tokens;
    j["tokens_by_source"] = std::move(t);
  }
  std::printf("%s\n", json::dump(j).c_str());
  return 0;
}

}  // namespace deepthin::cli
