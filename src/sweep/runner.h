// Runs an experiment's training runs: each in <runs_root>/<experiment>/<run>/, spread over GPUs
// (one or several per run, and several runs per GPU with `parallel`), or on the CPU.
//
// A run is a child process `deepthin train <dir>/run.yaml --resume <dir>`, its output appended to
// <dir>/sweep.log, its outcome in <dir>/sweep_status.json. Finished runs are skipped; a run that
// was interrupted or failed resumes from its last checkpoint the next time; a failed run is
// recorded and the sweep goes on (the exit status is 1 if any failed). SIGINT/SIGTERM stop the
// sweep: the runs checkpoint and are marked interrupted.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "sweep/experiment.h"

namespace deepthin::sweep {

struct SweepOptions {
  std::filesystem::path runs_root = "runs";
  std::vector<int> gpus;  // empty: the CPU
  int gpus_per_run = 1;
  int parallel = 1;              // runs at once on each GPU group (or on the CPU)
  std::string only;              // run names containing this (empty: all)
  std::filesystem::path binary;  // the deepthin executable; empty: this process's
};

struct SweepSummary {
  int done = 0, skipped = 0, failed = 0, interrupted = 0;
};

// The run directory of a run.
std::filesystem::path run_dir(const SweepOptions& o, const Experiment& e, const RunSpec& r);
// The experiment's runs with run.root and run.name pointing into the sweep directory.
config::Config run_config(const SweepOptions& o, const Experiment& e, const RunSpec& r);
// Writes <runs_root>/<experiment>/sweep.json: the experiment, its axes and every run's point,
// seed and overrides (what `deepthin report` groups by).
void write_manifest(const SweepOptions& o, const Experiment& e);

SweepSummary run_sweep(const Experiment& e, const SweepOptions& o);

}  // namespace deepthin::sweep
