// The mixed window stream of mixture.h: integer shares, the greedy blending rule, per-source
// permutations, and the state a checkpoint keeps.
#include "data/mixture.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <set>

#include "data/loader.h"
#include "util/error.h"

namespace deepthin::data {

namespace {

constexpr int64_t kShareUnit = int64_t{1} << 20;  // weights become W_s / D with W_s ≈ w_s·2^20

uint64_t name_key(const std::string& name) {
  if (name.empty()) return 0;  // data.path's one unnamed source keeps the order it always had
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : name) h = (h ^ c) * 1099511628211ull;
  h += 0x9E3779B97F4A7C15ull;
  h = (h ^ (h >> 30)) * 0xBF58476D1CE4E5B9ull;
  h = (h ^ (h >> 27)) * 0x94D049BB133111EBull;
  return h ^ (h >> 31);
}

std::string describe(const std::vector<std::string>& names, const std::vector<double>& weights) {
  std::string s;
  for (size_t i = 0; i < names.size(); ++i) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", weights[i]);
    s += (i ? ", " : "") + (names[i].empty() ? std::string("data.path") : names[i]) + " " + buf;
  }
  return s;
}

}  // namespace

Json MixState::to_json() const {
  Json j = Json::object();
  j["seed"] = static_cast<int64_t>(seed);
  j["cursor"] = cursor;
  const bool plain = sources.size() == 1 && sources[0].name.empty() && origin == 0;
  if (plain) return j;  // the format of every checkpoint before mixtures
  j["origin"] = origin;
  Json w = Json::array();
  for (double x : weights) w.push_back(x);
  j["weights"] = std::move(w);
  Json srcs = Json::array();
  for (const auto& s : sources) {
    Json o = Json::object();
    o["name"] = s.name;
    o["position"] = s.position;
    o["count"] = s.count;
    srcs.push_back(std::move(o));
  }
  j["sources"] = std::move(srcs);
  return j;
}

MixState MixState::from_json(const Json& j, const std::string& where) {
  MixState s;
  s.seed = static_cast<uint64_t>(json::as_int(json::at(j, "seed", where), where + ": seed"));
  s.cursor = json::as_int(json::at(j, "cursor", where), where + ": cursor");
  if (s.cursor < 0) fail_input(where + ": negative loader cursor");
  const Json* srcs = json::find(j, "sources");
  if (!srcs) {  // a single unnamed source
    s.sources = {SourceState{"", s.cursor, s.cursor}};
    s.weights = {1.0};
    return s;
  }
  s.origin = json::as_int(json::at(j, "origin", where), where + ": origin");
  for (const auto& w : json::as_array(json::at(j, "weights", where), where + ": weights"))
    s.weights.push_back(json::as_double(w, where + ": weights"));
  for (const auto& o : json::as_array(*srcs, where + ": sources")) {
    SourceState ss;
    ss.name = json::as_string(json::at(o, "name", where), where + ": sources.name");
    ss.position = json::as_int(json::at(o, "position", where), where + ": sources.position");
    ss.count = json::as_int(json::at(o, "count", where), where + ": sources.count");
    s.sources.push_back(std::move(ss));
  }
  if (s.sources.size() != s.weights.size() || s.sources.empty() || s.origin < 0 ||
      s.origin > s.cursor)
    fail_input(where + ": the loader's mixture state is inconsistent");
  int64_t total = 0;
  for (const auto& ss : s.sources) {
    if (ss.count < 0 || ss.position < ss.count)
      fail_input(where + ": the loader's state for source '" + ss.name + "' is inconsistent");
    total += ss.count;
  }
  if (total != s.cursor - s.origin)
    fail_input(where + ": the loader's per-source counts do not add up to its cursor");
  return s;
}

Mixture::Mixture(std::vector<MixSource> sources, uint64_t seed, bool shuffle)
    : sources_(std::move(sources)), seed_(seed), shuffle_(shuffle) {
  if (sources_.empty()) fail_input("a data mixture needs at least one source");
  double total = 0;
  for (const auto& s : sources_) {
    if (!std::isfinite(s.weight) || s.weight <= 0)
      fail_input("data source '" + s.name + "': weight must be a finite number > 0");
    if (s.windows <= 0) fail_input("data source '" + s.name + "' holds no window");
    total += s.weight;
  }
  for (const auto& s : sources_) {
    const int64_t w = std::max<int64_t>(1, std::llround(s.weight / total * kShareUnit));
    shares_.push_back(w);
    denom_ += w;
  }
}

MixState Mixture::initial_state() const {
  MixState st;
  st.seed = seed_;
  for (const auto& s : sources_) {
    st.sources.push_back(SourceState{s.name, 0, 0});
    st.weights.push_back(s.weight);
  }
  return st;
}

MixState Mixture::resume(const MixState& saved, bool allow_change,
                         std::vector<std::string>* notes) const {
  std::vector<std::string> now_names, was_names;
  std::vector<double> now_weights;
  for (const auto& s : sources_) {
    now_names.push_back(s.name);
    now_weights.push_back(s.weight);
  }
  for (const auto& s : saved.sources) was_names.push_back(s.name);
  if (now_names == was_names && now_weights == saved.weights) return saved;
  if (!allow_change) {
    std::string what;
    for (size_t i = 0; i < std::max(now_names.size(), was_names.size()); ++i) {
      if (i < now_names.size() && i < was_names.size() && now_names[i] == was_names[i]) {
        if (now_weights[i] != saved.weights[i])
          what += (what.empty() ? "" : "; ") + std::string("source '") + now_names[i] +
                  "' had weight " + std::to_string(saved.weights[i]) + ", now " +
                  std::to_string(now_weights[i]);
        continue;
      }
      what += (what.empty() ? "" : "; ") + std::string("source ") + std::to_string(i) + " was '" +
              (i < was_names.size() ? was_names[i] : std::string("(none)")) + "', now '" +
              (i < now_names.size() ? now_names[i] : std::string("(none)")) + "'";
    }
    fail_input("the data mixture differs from the one the run was trained on (" + what +
               "): the run was [" + describe(was_names, saved.weights) + "], the config says [" +
               describe(now_names, now_weights) +
               "]; set data.allow_mixture_change: true to continue with the new mixture, each "
               "source from where it was");
  }
  MixState st;
  st.seed = saved.seed;  // the order a run began with stays its order
  st.cursor = saved.cursor;
  st.origin = saved.cursor;
  st.weights = now_weights;
  for (const auto& s : sources_) {
    SourceState ss{s.name, 0, 0};
    bool found = false;
    for (const auto& w : saved.sources)
      if (w.name == s.name) {
        ss.position = w.position;
        found = true;
      }
    if (notes)
      notes->push_back(found ? "source '" + s.name + "' continues at window " +
                                   std::to_string(ss.position) + " of its stream"
                             : "source '" + s.name + "' is new: it starts at its beginning");
    st.sources.push_back(ss);
  }
  if (notes)
    for (const auto& w : saved.sources)
      if (std::find(now_names.begin(), now_names.end(), w.name) == now_names.end())
        notes->push_back("source '" + w.name + "' is no longer in the mixture (it gave " +
                         std::to_string(w.position) + " windows)");
  return st;
}

int64_t Mixture::window_of(int s, int64_t position, uint64_t seed) const {
  const int64_t n = sources_[s].windows;
  const int64_t epoch = position / n, i = position % n;
  if (!shuffle_) return i;
  Permutation perm(n, (seed * 1000003ull + static_cast<uint64_t>(epoch)) ^ name_key(sources_[s].name));
  return perm(i);
}

void Mixture::advance(MixState& st, int64_t n, std::vector<Pick>* out) const {
  const int S = static_cast<int>(sources_.size());
  for (int64_t k = 0; k < n; ++k) {
    int best = 0;
    if (S > 1) {
      const __int128 i = st.cursor - st.origin;
      __int128 best_gap = 0;
      for (int s = 0; s < S; ++s) {
        const __int128 gap = static_cast<__int128>(shares_[s]) * (i + 1) -
                             static_cast<__int128>(denom_) * st.sources[s].count;
        if (s == 0 || gap > best_gap) {
          best = s;
          best_gap = gap;
        }
      }
    }
    SourceState& src = st.sources[best];
    if (out)
      out->push_back(Pick{best, window_of(best, src.position, st.seed),
                          src.position / sources_[best].windows});
    ++src.position;
    ++src.count;
    ++st.cursor;
  }
}

}  // namespace deepthin::data
