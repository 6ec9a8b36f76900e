// The whole config: one typed struct per YAML section. Load from a file (with `base:` and `--set`),
// print resolved, document.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "config/model_config.h"
#include "config/schema.h"
#include "config/train_config.h"

namespace deepthin::config {

struct Config : Section {
  RunConfig run;
  ModelConfig model;
  DataConfig data;
  TrainConfig train;
  OptimizerConfig optimizer;
  ScheduleConfig schedule;
  EvalConfig eval;
  CheckpointConfig checkpoint;
  LogConfig log;
  DistributedConfig distributed;
  KdConfig kd;

  void visit(Visitor& v) override;
  void finalize() override;
  void check(const Checker& c) const override;
};

// Reads `path` (and its bases), applies the `--set` overrides in order, and validates.
Config load_config(const std::filesystem::path& path, const std::vector<std::string>& sets = {});
// Parses YAML text as a config; `where` names it in errors.
Config parse_config(const std::string& text, const std::string& where,
                    const std::vector<std::string>& sets = {});
// Runs the schema's rules on a config built in code (from a config.json, say); errors name `where`.
Config validated(const Config& c, const std::string& where);
// The resolved config as YAML; reading it back gives the same config.
std::string to_yaml(const Config& c);
// The README's reference: one markdown table row per key.
std::string reference_markdown();

}  // namespace deepthin::config
