// setup_run (run.h): the parts of a run's setup, each a function, called in the recipe's order.
#include "train/run.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <optional>
#include <thread>
#include <tuple>

#include "data/tokenizer.h"
#include "model/param_count.h"
#include "storage/model_dir.h"
#include "train/device_info.h"
#include "train/step.h"
#include "util/error.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::train {

namespace fs = std::filesystem;

namespace {

c10::Device pick_device(const std::string& spec, const dist::LaunchEnv& env) {
  // Under torchrun / SLURM each process drives its local GPU.
  auto d = parse_device(spec);
  if (d.is_cuda() && env.launcher != "none" && (spec == "auto" || spec == "cuda"))
    d = c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(env.local_rank));
  return d;
}

// Launch, device, precision, the checks that need no data, the process group. Nothing is written
// yet: a run that is refused leaves no trace.
void setup_process(Run& r, const TrainOptions& opts) {
  const config::Config& cfg = *r.cfg;
  r.env = dist::detect_launch();
  r.device = pick_device(cfg.train.device, r.env);
  set_current_device(r.device);
  if (r.env.distributed() && r.device.is_cpu() && !std::getenv("OMP_NUM_THREADS"))
    at::set_num_threads(std::max<int>(
        1, static_cast<int>(std::thread::hardware_concurrency()) / r.env.local_world_size));
  r.precision = resolve_precision(cfg.train.precision, r.device);
  check_memory_fits(cfg, r.device, /*training=*/true, r.env.world_size, "training");
  if (cfg.data.path.empty() && cfg.data.sources.empty())
    fail_input(
        "data.path is not set: point it at a prepared directory or shard files (or list "
        "several under data.sources)");
  // Listing validates every checkpoint's identity (its folder name against its trainer_state).
  const bool has_checkpoints = !list_checkpoints(r.dir).empty();
  if (!opts.resume && has_checkpoints)
    fail_input("run directory " + r.dir.string() +
               " already holds checkpoints; pass --resume to continue it, or set run.name to start "
               "another run");
  r.comm = dist::Comm::create(r.env, r.device, cfg.distributed);
}

// The run directory, once the data have been checked: created, locked (one writer) and logged to
// on rank 0; the ranks agree on the config and the directory.
void open_run_directory(Run& r) {
  const config::Config& cfg = *r.cfg;
  if (r.rank0()) {
    fs::create_directories(r.dir);
    r.lock = std::make_unique<DirLock>(r.dir, "run directory");
    log::configure(true, (r.dir / "train.log").string());
    remove_stale_temporaries(r.dir);
  } else {
    log::configure(true, "", log::Level::warn);  // other ranks: warnings and errors only
  }
  if (r.comm->active()) {
    log::info("distributed: {} over {}", r.env.describe(), r.comm->backend_name());
    r.comm->check_same(
        std::stoull(sha256_hex(config::to_yaml(cfg) + r.dir.string()).substr(0, 16), nullptr, 16),
        "the ranks were started with different configs or run directories; launch "
        "every rank with the same CONFIG, --set options and --resume");
  }
}

std::shared_ptr<data::TokenDataset> open_val(const config::DataSource& d) {
  if (!d.val_path.empty()) return data::TokenDataset::open(d.val_path, "val");
  std::error_code ec;
  if (!fs::is_directory(d.path, ec)) return nullptr;
  const Json m = json::parse(read_file(fs::path(d.path) / "manifest.json"));
  const Json* splits = json::find(m, "splits");
  const Json* v = splits ? json::find(*splits, "val") : nullptr;
  if (!v || json::as_int(json::at(*v, "tokens", "manifest")) == 0) return nullptr;
  return data::TokenDataset::open(d.path, "val");
}

// Every source's datasets, checked against the model's vocabulary and the configured tokenizer.
std::vector<Run::Source> open_sources(const config::Config& cfg) {
  std::optional<data::Tokenizer> tok;
  if (!cfg.data.tokenizer.empty()) tok = data::Tokenizer::load(cfg.data.tokenizer);
  std::vector<Run::Source> out;
  for (const auto& src : config::data_sources(cfg.data)) {
    Run::Source s{src.name, src.weight, data::TokenDataset::open(src.path, "train"), open_val(src)};
    for (const auto* ds : {s.train.get(), s.val.get()}) {
      if (!ds) continue;
      ds->check_vocab(cfg.model.vocab_size, "model.vocab_size");  // the ids the shards really hold
      if (tok) ds->check_tokenizer(tok->sha256(), tok->path().string());
    }
    out.push_back(std::move(s));
  }
  return out;
}

// The step budget over `world` ranks: tokens per optimizer step, and steps.
std::pair<int64_t, int64_t> budget(const config::Config& cfg, int world) {
  const auto& tc = cfg.train;
  const int64_t per_step =
      tc.micro_batch_size * tc.grad_accum_steps * tc.seq_len * static_cast<int64_t>(world);
  const int64_t steps = tc.max_steps > 0 ? tc.max_steps : (tc.max_tokens + per_step - 1) / per_step;
  if (steps <= 0) fail_input("set train.max_steps or train.max_tokens to a positive number");
  return {per_step, steps};
}

std::unique_ptr<data::Loader> make_loader(const config::Config& cfg,
                                          const std::vector<Run::Source>& sources, int rank,
                                          int world, int prefetch) {
  std::vector<data::LoaderSource> ls;
  for (const auto& s : sources) ls.push_back({s.name, s.weight, s.train});
  const auto& tc = cfg.train;
  return std::make_unique<data::Loader>(
      std::move(ls), data::LoaderOptions{tc.micro_batch_size, tc.seq_len, rank, world,
                                         static_cast<uint64_t>(tc.seed), true, prefetch});
}

// The datasets, the step budget and this rank's loader.
void open_data(Run& r) {
  const config::Config& cfg = *r.cfg;
  r.sources = open_sources(cfg);
  r.train_ds = r.sources[0].train;
  r.val_ds = r.sources[0].val;
  std::tie(r.tokens_per_step, r.total_steps) = budget(cfg, r.world());
  r.loader =
      make_loader(cfg, r.sources, r.comm->rank(), r.world(), static_cast<int>(cfg.data.prefetch));
}

// fp32 master weights on the device; with several ranks, bucketed data parallelism (optionally
// ZeRO-1) and AdamW over this rank's slices.
void build_model(Run& r) {
  const config::Config& cfg = *r.cfg;
  r.model = model::Decoder(cfg.model);
  r.model->reset_parameters(static_cast<uint64_t>(cfg.train.seed));
  r.model->to(r.device);
  configure_for_training(r.model, cfg.train);
  std::vector<std::pair<std::string, at::Tensor>> named;
  for (const auto& item : r.model->named_parameters()) named.emplace_back(item.key(), item.value());
  if (r.comm->active()) {
    const auto& d = cfg.distributed;
    r.dp = std::make_unique<dist::DataParallel>(r.comm, named, d.bucket_mb, d.zero1,
                                                r.model->gradient_accumulations());
    r.dp->broadcast_parameters();
    log::info("data parallel: {} gradient buckets of up to {} MB{}", r.dp->num_buckets(),
              log::fixed(d.bucket_mb, 1),
              r.dp->zero1()
                  ? ", ZeRO-1 (this rank updates " +
                        group_digits(r.dp->shard_end() - r.dp->shard_begin()) + " elements)"
                  : std::string());
  }
  r.optimizer = r.dp ? std::make_unique<AdamW>(r.dp->optimizer_slices(), cfg.optimizer)
                     : std::make_unique<AdamW>(named, cfg.optimizer);
}

// Distillation's teacher. With kd.ratio 0 it is checked and let go: plain training.
void attach_teacher(Run& r) {
  const config::Config& cfg = *r.cfg;
  if (!cfg.kd.cache.empty()) {
    std::vector<std::shared_ptr<data::TokenDataset>> train;
    for (const auto& s : r.sources) train.push_back(s.train);
    r.kd_cache = std::make_unique<KdCache>(cfg.kd.cache, cfg, train);
    log::info("distillation: from the top-k cache {}, forward_kl at temperature {}, ratio {}{}",
              r.kd_cache->describe(), cfg.kd.temperature, cfg.kd.ratio,
              cfg.kd.teacher.empty() ? "" : " (kd.teacher is not loaded)");
    if (cfg.kd.ratio == 0) {
      log::info("kd.ratio is 0: the cache is not used");
      r.kd_cache.reset();
    }
    return;
  }
  if (cfg.kd.teacher.empty()) return;
  r.teacher = load_teacher(cfg, r.device);
  const Teacher& t = *r.teacher;
  log::info("distillation: teacher {} ({} parameters, {} on {}), {} at temperature {}, ratio {}",
            t.dir, group_digits(model::count_params(t.model->config()).total),
            t.device.is_cuda() ? "bf16" : "fp32", t.device.str(),
            config::kKdLosses[static_cast<int>(cfg.kd.loss)], cfg.kd.temperature, cfg.kd.ratio);
  if (cfg.kd.ratio == 0) {
    log::info("kd.ratio is 0: the teacher is not used");
    r.teacher.reset();
  }
}

// Every rank reads the same checkpoint: weights, optimizer moments, progress, loader position and
// the CPU generator.
void resume(Run& r, const TrainOptions& opts) {
  auto ref = latest_checkpoint(r.dir, opts.resume_fallback);
  if (!ref) {
    log::info("no checkpoint in {}: starting from scratch", r.dir.string());
    return;
  }
  auto ck = read_checkpoint(ref->dir);
  auto saved = storage::load_model_dir(ref->dir);
  config::Config want, have;
  want.model = r.cfg->model;
  have.model = saved.config.model;
  if (config::to_yaml(want) != config::to_yaml(have))
    fail_input("checkpoint " + ref->dir.string() +
               " holds a different model than the config's model section");
  storage::load_weights(r.model, storage::model_tensors(saved.model, false), ref->dir.string());
  r.optimizer->load_state(ck.optimizer, ck.state.step, ref->dir.string());
  r.state = ck.state;
  std::vector<std::string> notes;
  r.loader->set_state(r.state.loader, r.cfg->data.allow_mixture_change, &notes);
  for (const auto& n : notes) log::info("data (data.allow_mixture_change): {}", n);
  r.state.loader = r.loader->state();
  restore_cpu_rng(r.state);
  log::info("resumed from {} (step {}, {} tokens)", ref->dir.string(), r.state.step,
            group_digits(r.state.tokens));
}

void describe(const Run& r) {
  const config::Config& cfg = *r.cfg;
  const auto counts = model::count_params(cfg.model);
  log::info("model: {} parameters, {} effective layers; {} on {} ({}){}",
            group_digits(counts.total), counts.effective_layers, precision_name(r.precision),
            device_name(r.device), r.device.str(),
            r.world() > 1 ? " × " + std::to_string(r.world()) + " ranks" : std::string());
  if (r.sources.size() == 1) {
    log::info("data: {} ({} tokens, {} windows); {} tokens/step, {} steps ({} tokens)",
              r.train_ds->description(), group_digits(r.train_ds->total_tokens()),
              group_digits(r.loader->num_windows()), group_digits(r.tokens_per_step), r.total_steps,
              human_count(static_cast<double>(r.total_steps * r.tokens_per_step)));
    return;
  }
  log::info("data: a mixture of {} sources; {} tokens/step, {} steps ({} tokens)", r.sources.size(),
            group_digits(r.tokens_per_step), r.total_steps,
            human_count(static_cast<double>(r.total_steps * r.tokens_per_step)));
  for (const auto& p :
       data::data_plan(*r.loader, r.total_steps * r.tokens_per_step / cfg.train.seq_len))
    log::info(
        "  source {}: weight {} ({}% of the tokens), {} tokens in {}; this run reads {} "
        "tokens, {} epochs",
        p.name, p.weight, log::fixed(100 * p.share, 2), group_digits(p.tokens), p.description,
        human_count(p.tokens_read), log::fixed(p.epochs, 3));
}

// Asynchronous checkpoints on a GPU copy into page-locked host memory allocated here, at start-up,
// rather than at the first checkpoint (about 12 bytes a parameter: weights and both moments). A
// sharded optimizer's gathered state allocates at its first checkpoint instead.
void reserve_checkpoint_memory(Run& r) {
  if (!r.cfg->checkpoint.async || !r.device.is_cuda() || (r.dp && r.dp->zero1())) return;
  const storage::TensorList model = storage::model_tensors(r.model, /*expand_shared=*/false);
  const storage::TensorList opt = r.optimizer->state_tensors();
  r.checkpoints->staging().reserve(r.device, {&model, &opt},
                                   {storage::SaveOptions{}.dtype, std::nullopt});
  log::info("checkpoints: {} MiB of page-locked host memory for snapshots",
            r.checkpoints->staging().bytes() >> 20);
}

}  // namespace

std::vector<data::SourcePlan> plan_data(const config::Config& cfg, int world_size) {
  const auto sources = open_sources(cfg);
  const auto [per_step, steps] = budget(cfg, world_size);
  const auto loader = make_loader(cfg, sources, 0, world_size, 0);
  return data::data_plan(*loader, steps * per_step / cfg.train.seq_len);
}

std::unique_ptr<Run> setup_run(const config::Config& cfg, const TrainOptions& opts) {
  auto r = std::make_unique<Run>();
  r->cfg = &cfg;
  r->dir = opts.run_dir;
  setup_process(*r, opts);
  open_data(*r);
  open_run_directory(*r);
  build_model(*r);
  attach_teacher(*r);
  r->state.loader = r->loader->state();
  if (opts.resume) resume(*r, opts);
  if (r->rank0()) {
    r->checkpoints =
        std::make_unique<CheckpointWriter>(r->dir, cfg.checkpoint.keep_last, cfg.checkpoint.async);
    reserve_checkpoint_memory(*r);
    write_file_atomic(r->dir / "config.yaml", config::to_yaml(cfg));
    r->metrics =
        std::make_unique<MetricsLog>(r->dir, cfg.log.tensorboard, opts.resume ? r->state.step : -1);
  }
  describe(*r);
  return r;
}

}  // namespace deepthin::train
