// A weighted mixture of token sources, served as one deterministic stream of windows.
//
// Which source the mixed stream's position p comes from is decided by the greedy rule Megatron-LM's
// blended datasets use: position p goes to the source s whose share falls furthest behind its
// weight, the largest W_s·(p + 1) − D·c_s(p), where c_s(p) counts the positions before p that went
// to s and W_s / D is s's weight as a ratio of integers (2^20 steps), so every machine computes the
// same stream with integer arithmetic. Every prefix of the stream holds each source within one
// window of its weight. The k-th window a source gives is its own stream position k: its epoch is
// k / n_s, and within an epoch its windows come in a seeded permutation (each window once per
// epoch). A source that runs out simply starts its next epoch.
//
// The state — the mixed stream's cursor and, per source, how many windows it has given — is all a
// resume needs, at any world size. A change of weights (allowed only when asked for) starts a new
// regime at the cursor: the counts restart, and every source continues from its own position.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "util/json_io.h"

namespace deepthin::data {

struct SourceState {
  std::string name;
  int64_t position = 0;  // windows this source has given since the run began
  int64_t count = 0;     // of which since the current weights took effect
};

// The mixed stream's state. One source with no regime change is the plain stream of before, and
// is stored as {seed, cursor} as it always was.
struct MixState {
  uint64_t seed = 0;
  int64_t cursor = 0;  // positions of the mixed stream served (all ranks)
  int64_t origin = 0;  // cursor at which the current weights took effect
  std::vector<SourceState> sources;
  std::vector<double> weights;  // the weights of the current regime, as configured
  Json to_json() const;
  static MixState from_json(const Json& j, const std::string& where);
};

struct MixSource {
  std::string name;
  double weight = 1.0;
  int64_t windows = 0;  // windows of seq_len + 1 tokens the source holds
};

class Mixture {
 public:
  // Input error when a weight is not finite and positive or a source holds no window.
  Mixture(std::vector<MixSource> sources, uint64_t seed, bool shuffle);

  size_t size() const { return sources_.size(); }
  const MixSource& source(size_t s) const { return sources_[s]; }
  // The fraction of the mixed stream source s gets (its weight as the integer ratio used).
  double share(size_t s) const { return static_cast<double>(shares_[s]) / static_cast<double>(denom_); }
  // The fresh state of a run.
  MixState initial_state() const;
  // Checks a resumed state against this mixture. With the same sources and weights it is taken as
  // it is. Otherwise, unless allow_change, an input error naming what changed; with allow_change
  // a new regime starts at the cursor: sources keep their positions (by name; a new source starts
  // at 0) and `notes` says what happened to each.
  MixState resume(const MixState& saved, bool allow_change, std::vector<std::string>* notes) const;

  struct Pick {
    int source = 0;
    int64_t window = 0;    // the source's window index
    int64_t epoch = 0;     // the source's epoch this window belongs to
  };
  // Advances `st` by n positions of the mixed stream and appends each position's pick to out (or
  // only counts, when out is null).
  void advance(MixState& st, int64_t n, std::vector<Pick>* out) const;

 private:
  int64_t window_of(int s, int64_t position, uint64_t seed) const;
  std::vector<MixSource> sources_;
  std::vector<int64_t> shares_;  // W_s
  int64_t denom_ = 0;            // D = Σ W_s
  uint64_t seed_;
  bool shuffle_;
};

}  // namespace deepthin::data
