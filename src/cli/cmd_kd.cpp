// deepthin kd cache CONFIG --out DIR [--k K] [--batch B] [--device D] [--set …] [--force]
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "cli/args.h"
#include "cli/commands.h"
#include "config/config.h"
#include "train/device_info.h"
#include "train/kd_cache.h"
#include "train/precision.h"
#include "util/error.h"
#include "util/log.h"
#include "util/strings.h"

namespace deepthin::cli {

namespace {

void show_progress(const train::KdCacheProgress& p) {
  static double last = -10;
  const bool done = p.windows == p.total_windows;
  if (!done && p.seconds - last < 10) return;
  last = p.seconds;
  const double s = std::max(p.seconds, 1e-9);
  std::fprintf(stderr, "kd cache: %5.1f%%  %lld of %lld windows  %.1f MB  %.1f MB/s\n",
               p.total_windows ? 100.0 * p.windows / p.total_windows : 100.0,
               static_cast<long long>(p.windows), static_cast<long long>(p.total_windows),
               p.bytes / 1e6, p.bytes / 1e6 / s);
}

int cache(const Argv& argv) {
  Args args(
      "kd cache",
      "deepthin kd cache CONFIG --out DIR [--k K] [--batch B] [--device D] [--set KEY=VALUE]... "
      "[--force]",
      "Run kd.teacher once over every training window of the config's data and write its "
      "top-k log-probabilities per token to DIR; students then distill with kd.cache: DIR "
      "(forward_kl) without running the teacher.",
      {"CONFIG"},
      {set_option(),
       {"out", "DIR", "Directory to write (must not exist unless --force)"},
       {"k", "K", "Tokens kept per position (default 16)"},
       {"batch", "B", "Windows per teacher forward (default 8)"},
       {"device", "D", "Device of the teacher (default: train.device)"},
       {"force", "", "Replace DIR if it is an earlier cache"}});
  if (!args.parse(argv)) return 0;
  auto cfg = config::load_config(args.positional(0), args.all("set"));
  if (!args.has("out")) fail_input("deepthin kd cache: --out DIR is required");
  const int64_t k = args.get_int("k", 16, 1, INT64_MAX);
  const int64_t batch = args.get_int("batch", 8, 1, 1 << 20);
  const auto device = train::parse_device(args.get("device", cfg.train.device));
  auto st = train::write_kd_cache(cfg, args.get("out"), k, batch, device, args.has("force"),
                                  show_progress);
  log::info(
      "wrote {}: {} windows, {} tokens, top {} per token, {} MB ({} bytes a token) in {} s "
      "({} tokens/s)",
      args.get("out"), group_digits(st.windows), group_digits(st.tokens), k,
      log::fixed(st.bytes / 1e6, 1), log::fixed(st.bytes_per_token(), 1), log::fixed(st.seconds, 1),
      log::fixed(st.tokens / std::max(st.seconds, 1e-9), 0));
  return 0;
}

}  // namespace

int run_kd(const Argv& argv) {
  return dispatch_subcommand("kd", {{"cache", cache}}, argv);
}

}  // namespace deepthin::cli
