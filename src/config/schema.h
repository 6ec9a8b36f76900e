// Typed config sections and the one visitor interface that reads, validates, prints and documents
// them.
//
// A section lists its keys once, in visit(): key, field, doc line, and the range it allows. From
// that single list deepthin reads YAML (rejecting unknown keys with a suggestion), prints the
// resolved config, and generates the README's reference. Rules that relate several keys live in
// check(); values derived from others (head_dim = dim / n_heads) are filled in finalize(), which
// runs before check().
#pragma once

#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/tree.h"

namespace deepthin::config {

struct IntRange {
  int64_t min = std::numeric_limits<int64_t>::min();
  int64_t max = std::numeric_limits<int64_t>::max();
};
struct RealRange {
  double min = -std::numeric_limits<double>::infinity();
  double max = std::numeric_limits<double>::infinity();
  bool min_exclusive = false;  // (min, max] instead of [min, max]
};
inline constexpr IntRange kPositive{1};
inline constexpr IntRange kNonNegative{0};
inline constexpr RealRange kPositiveReal{0.0, std::numeric_limits<double>::infinity(), true};
inline constexpr RealRange kUnitInterval{0.0, 1.0};

class Section;
class Checker;

// A list of sections of one type (data.sources), seen through the Visitor without its type.
class SectionList {
 public:
  virtual ~SectionList() = default;
  virtual size_t size() const = 0;
  virtual Section& at(size_t i) = 0;
  virtual void clear() = 0;
  virtual Section& append() = 0;                      // a default element, appended
  virtual std::unique_ptr<Section> prototype() const = 0;  // a default element, for documentation
};

class Visitor {
 public:
  virtual ~Visitor() = default;
  virtual void field(std::string_view key, int64_t& v, std::string_view doc,
                     IntRange range = {}) = 0;
  virtual void field(std::string_view key, double& v, std::string_view doc,
                     RealRange range = {}) = 0;
  virtual void field(std::string_view key, bool& v, std::string_view doc) = 0;
  virtual void field(std::string_view key, std::string& v, std::string_view doc) = 0;
  virtual void field(std::string_view key, std::vector<double>& v, std::string_view doc,
                     size_t length, RealRange range = {}) = 0;
  virtual void field(std::string_view key, std::vector<std::string>& v, std::string_view doc) = 0;
  // One of `names`; `index` is the position of the chosen name.
  virtual void choice_index(std::string_view key, int& index,
                            std::span<const std::string_view> names, std::string_view doc) = 0;
  virtual void section(std::string_view key, Section& s, std::string_view doc) = 0;
  virtual void section_list(std::string_view key, SectionList& list, std::string_view doc) = 0;

  // A list of sections of type S.
  template <class S>
  void sections(std::string_view key, std::vector<S>& v, std::string_view doc);

  // Enum fields: E's values are the positions of `names`.
  template <class E>
  void choice(std::string_view key, E& v, std::span<const std::string_view> names,
              std::string_view doc) {
    int i = static_cast<int>(v);
    choice_index(key, i, names, doc);
    v = static_cast<E>(i);
  }
};

class Section {
 public:
  virtual ~Section() = default;
  virtual void visit(Visitor& v) = 0;
  // Fill values that default to something derived from other keys. Runs after the whole section
  // (children included) has been read.
  virtual void finalize() {}
  // Cross-key rules. Runs after finalize().
  virtual void check(const Checker& c) const { (void)c; }
};

template <class S>
class SectionVector : public SectionList {
 public:
  explicit SectionVector(std::vector<S>& v) : v_(v) {}
  size_t size() const override { return v_.size(); }
  Section& at(size_t i) override { return v_[i]; }
  void clear() override { v_.clear(); }
  Section& append() override { return v_.emplace_back(); }
  std::unique_ptr<Section> prototype() const override { return std::make_unique<S>(); }

 private:
  std::vector<S>& v_;
};

template <class S>
void Visitor::sections(std::string_view key, std::vector<S>& v, std::string_view doc) {
  SectionVector<S> list(v);
  section_list(key, list, doc);
}

// Reports a rule broken at a key path, located where that key (or its nearest written ancestor) was
// written, with the config file as the fallback.
class Checker {
 public:
  Checker(const std::map<std::string, Source>* sources, std::string prefix, Source fallback)
      : sources_(sources), prefix_(std::move(prefix)), fallback_(std::move(fallback)) {}
  Checker scope(std::string_view key) const;
  // Throws an input error "<where>: <prefix.key>: <message>" when `ok` is false.
  void require(bool ok, std::string_view key, const std::string& message) const;
  [[noreturn]] void fail(std::string_view key, const std::string& message) const;
  Source where(std::string_view key) const;

 private:
  const std::map<std::string, Source>* sources_;
  std::string prefix_;
  Source fallback_;
};

// Fills `root` from `tree`; unknown keys, wrong types and out-of-range values are input errors that
// name the place and the key path. Then runs finalize() and check() on every section, innermost
// first.
void read_section(Section& root, const Node& tree);
// The section as YAML text (the resolved config).
std::string write_section(Section& root);
// Markdown reference lines, one per key: "| `model.dim` | int | 576 | doc |".
std::string reference_table(Section& root);
// Every key path the schema knows, e.g. "model.ffn.type".
std::vector<std::string> key_paths(Section& root);

}  // namespace deepthin::config
