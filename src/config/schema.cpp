#include "config/schema.h"

#include <yaml-cpp/yaml.h>

#include <cmath>
#include <sstream>

#include "util/error.h"
#include "util/json_io.h"
#include "util/strings.h"

namespace deepthin::config {

Checker Checker::scope(std::string_view key) const {
  return Checker(sources_, prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key),
                 fallback_);
}

Source Checker::where(std::string_view key) const {
  std::string path = prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  while (!path.empty()) {
    if (sources_) {
      auto it = sources_->find(path);
      if (it != sources_->end()) return it->second;
    }
    size_t dot = path.rfind('.');
    if (dot == std::string::npos) break;
    path.resize(dot);
  }
  return fallback_;
}

void Checker::fail(std::string_view key, const std::string& message) const {
  std::string path = prefix_.empty() ? std::string(key) : prefix_ + "." + std::string(key);
  fail_input(where(key).str() + ": " + path + ": " + message);
}

void Checker::require(bool ok, std::string_view key, const std::string& message) const {
  if (!ok) fail(key, message);
}

namespace {

std::string join_path(const std::string& prefix, std::string_view key) {
  return prefix.empty() ? std::string(key) : prefix + "." + std::string(key);
}

std::string fmt_real(double d) {
  std::string s = json::format_double(d);
  if (s.size() > 2 && s.substr(s.size() - 2) == ".0") s.resize(s.size() - 2);
  return s;
}

std::string range_text(const IntRange& r) {
  using L = std::numeric_limits<int64_t>;
  if (r.min != L::min() && r.max != L::max())
    return "between " + std::to_string(r.min) + " and " + std::to_string(r.max);
  if (r.min != L::min()) return ">= " + std::to_string(r.min);
  if (r.max != L::max()) return "<= " + std::to_string(r.max);
  return "";
}

std::string range_text(const RealRange& r) {
  bool lo = std::isfinite(r.min), hi = std::isfinite(r.max);
  std::string low = (r.min_exclusive ? "> " : ">= ") + fmt_real(r.min);
  if (lo && hi) return low + " and <= " + fmt_real(r.max);
  if (lo) return low;
  if (hi) return "<= " + fmt_real(r.max);
  return "";
}

// Reads a Node into a section.
class Reader : public Visitor {
 public:
  Reader(const Node& node, std::string prefix, std::map<std::string, Source>& sources,
         Source fallback)
      : node_(node), prefix_(std::move(prefix)), sources_(sources), fallback_(std::move(fallback)) {
    if (!node_.source.file.empty()) fallback_ = node_.source;
  }

  void field(std::string_view key, int64_t& v, std::string_view, IntRange range) override {
    const Node* n = take(key);
    if (!n) return;
    auto parsed = n->kind == Node::Kind::scalar && !n->quoted ? parse_int(n->scalar) : std::nullopt;
    if (!parsed) bad(key, *n, "an integer");
    if (*parsed < range.min || *parsed > range.max)
      fail_at(*n, key, "must be " + range_text(range) + ", got " + std::to_string(*parsed));
    v = *parsed;
  }

  void field(std::string_view key, double& v, std::string_view, RealRange range) override {
    const Node* n = take(key);
    if (!n) return;
    auto parsed =
        n->kind == Node::Kind::scalar && !n->quoted ? parse_double(n->scalar) : std::nullopt;
    if (!parsed) bad(key, *n, "a number");
    check_real(*n, key, *parsed, range);
    v = *parsed;
  }

  void field(std::string_view key, bool& v, std::string_view) override {
    const Node* n = take(key);
    if (!n) return;
    if (n->kind == Node::Kind::scalar && !n->quoted) {
      if (n->scalar == "true" || n->scalar == "True") {
        v = true;
        return;
      }
      if (n->scalar == "false" || n->scalar == "False") {
        v = false;
        return;
      }
    }
    bad(key, *n, "true or false");
  }

  void field(std::string_view key, std::string& v, std::string_view) override {
    const Node* n = take(key);
    if (!n) return;
    if (n->kind != Node::Kind::scalar) bad(key, *n, "a string");
    v = n->scalar;
  }

  void field(std::string_view key, std::vector<double>& v, std::string_view, size_t length,
             RealRange range) override {
    const Node* n = take(key);
    if (!n) return;
    if (n->kind != Node::Kind::sequence)
      bad(key, *n, "a list of " + std::to_string(length) + " numbers");
    if (n->items.size() != length)
      fail_at(*n, key,
              "expected a list of " + std::to_string(length) + " numbers, got " +
                  std::to_string(n->items.size()));
    std::vector<double> out;
    for (const auto& item : n->items) {
      auto parsed = item.kind == Node::Kind::scalar && !item.quoted ? parse_double(item.scalar)
                                                                    : std::nullopt;
      if (!parsed) bad(key, item, "a number in the list");
      check_real(item, key, *parsed, range);
      out.push_back(*parsed);
    }
    v = out;
  }

  void field(std::string_view key, std::vector<std::string>& v, std::string_view) override {
    const Node* n = take(key);
    if (!n) return;
    if (n->kind == Node::Kind::scalar) {
      v = {n->scalar};
      return;
    }
    if (n->kind != Node::Kind::sequence) bad(key, *n, "a list of strings");
    std::vector<std::string> out;
    for (const auto& item : n->items) {
      if (item.kind != Node::Kind::scalar) bad(key, item, "a string in the list");
      out.push_back(item.scalar);
    }
    v = out;
  }

  void choice_index(std::string_view key, int& index, std::span<const std::string_view> names,
                    std::string_view) override {
    const Node* n = take(key);
    if (!n) return;
    std::vector<std::string> allowed(names.begin(), names.end());
    if (n->kind == Node::Kind::scalar) {
      for (size_t i = 0; i < names.size(); ++i) {
        if (names[i] == n->scalar) {
          index = static_cast<int>(i);
          return;
        }
      }
    }
    std::string msg = "expected one of " + join(allowed, " | ") + ", got " + n->describe();
    if (n->kind == Node::Kind::scalar)
      if (auto s = nearest(n->scalar, allowed)) msg += "; did you mean '" + *s + "'?";
    fail_at(*n, key, msg);
  }

  void section(std::string_view key, Section& s, std::string_view) override {
    const Node* n = take(key);
    static const Node empty = [] {
      Node e;
      e.kind = Node::Kind::map;
      return e;
    }();
    if (n && n->kind == Node::Kind::null) n = nullptr;
    if (n && n->kind != Node::Kind::map) bad(key, *n, "a section (a mapping of keys)");
    Reader sub(n ? *n : empty, join_path(prefix_, key), sources_, fallback_);
    sub.read(s);
  }

  void section_list(std::string_view key, SectionList& list, std::string_view) override {
    const Node* n = take(key);
    if (!n || n->kind == Node::Kind::null) return;
    if (n->kind != Node::Kind::sequence) bad(key, *n, "a list of sections");
    list.clear();
    for (size_t i = 0; i < n->items.size(); ++i) {
      const Node& item = n->items[i];
      const std::string k = std::string(key) + "[" + std::to_string(i) + "]";
      if (item.kind != Node::Kind::map) bad(k, item, "a section (a mapping of keys)");
      Reader sub(item, join_path(prefix_, k), sources_, fallback_);
      sub.read(list.append());
    }
  }

  void read(Section& s) {
    s.visit(*this);
    for (const auto& [k, v] : node_.entries) {
      if (std::find(known_.begin(), known_.end(), k) != known_.end()) continue;
      std::string msg = "unknown key";
      if (auto near = nearest(k, known_)) msg += "; did you mean '" + *near + "'?";
      msg += " (valid keys" + (prefix_.empty() ? std::string() : " in " + prefix_) + ": " +
             join(known_, ", ") + ")";
      fail_input(v.source.str() + ": " + join_path(prefix_, k) + ": " + msg);
    }
    s.finalize();
    Checker checker(&sources_, prefix_, fallback_);
    s.check(checker);
  }

 private:
  const Node* take(std::string_view key) {
    known_.emplace_back(key);
    const Node* n = node_.find(key);
    if (n) sources_[join_path(prefix_, key)] = n->source;
    return n;
  }

  [[noreturn]] void fail_at(const Node& n, std::string_view key, const std::string& msg) {
    fail_input(n.source.str() + ": " + join_path(prefix_, key) + ": " + msg);
  }

  [[noreturn]] void bad(std::string_view key, const Node& n, const std::string& want) {
    fail_at(n, key, "expected " + want + ", got " + n.describe());
  }

  void check_real(const Node& n, std::string_view key, double d, const RealRange& r) {
    bool ok = std::isfinite(d) && (r.min_exclusive ? d > r.min : d >= r.min) && d <= r.max;
    if (!ok) fail_at(n, key, "must be " + range_text(r) + ", got " + n.scalar);
  }

  const Node& node_;
  std::string prefix_;
  std::map<std::string, Source>& sources_;
  Source fallback_;
  std::vector<std::string> known_;
};

// Emits a section as YAML.
class Writer : public Visitor {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}
  void field(std::string_view key, int64_t& v, std::string_view, IntRange) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << v;
  }
  void field(std::string_view key, double& v, std::string_view, RealRange) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << fmt_real(v);
  }
  void field(std::string_view key, bool& v, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << (v ? "true" : "false");
  }
  void field(std::string_view key, std::string& v, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value;
    // Quote strings that YAML would otherwise read as something else (numbers, booleans, empty).
    bool plain = !v.empty() && !parse_double(v) && v != "true" && v != "false" && v != "null" &&
                 v != "~" && v.find_first_of(":#{}[],&*!|>'\"%@`") == std::string::npos &&
                 v.front() != ' ' && v.front() != '-' && v.back() != ' ';
    if (plain) {
      out_ << v;
    } else {
      out_ << YAML::DoubleQuoted << v;
    }
  }
  void field(std::string_view key, std::vector<double>& v, std::string_view, size_t,
             RealRange) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (double d : v) out_ << fmt_real(d);
    out_ << YAML::EndSeq;
  }
  void field(std::string_view key, std::vector<std::string>& v, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& s : v) out_ << YAML::DoubleQuoted << s;
    out_ << YAML::EndSeq;
  }
  void choice_index(std::string_view key, int& index, std::span<const std::string_view> names,
                    std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << std::string(names[index]);
  }
  void section(std::string_view key, Section& s, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value << YAML::BeginMap;
    s.visit(*this);
    out_ << YAML::EndMap;
  }
  void section_list(std::string_view key, SectionList& list, std::string_view) override {
    out_ << YAML::Key << std::string(key) << YAML::Value;
    if (list.size() == 0) {
      out_ << YAML::Flow << YAML::BeginSeq << YAML::EndSeq;
      return;
    }
    out_ << YAML::BeginSeq;
    for (size_t i = 0; i < list.size(); ++i) {
      out_ << YAML::BeginMap;
      list.at(i).visit(*this);
      out_ << YAML::EndMap;
    }
    out_ << YAML::EndSeq;
  }

 private:
  YAML::Emitter& out_;
};

// Collects one reference row per key.
class Documenter : public Visitor {
 public:
  explicit Documenter(std::string prefix = "") : prefix_(std::move(prefix)) {}
  void field(std::string_view key, int64_t& v, std::string_view doc, IntRange r) override {
    row(key, "int", std::to_string(v), doc, range_text(r));
  }
  void field(std::string_view key, double& v, std::string_view doc, RealRange r) override {
    row(key, "float", fmt_real(v), doc, range_text(r));
  }
  void field(std::string_view key, bool& v, std::string_view doc) override {
    row(key, "bool", v ? "true" : "false", doc, "");
  }
  void field(std::string_view key, std::string& v, std::string_view doc) override {
    row(key, "string", v.empty() ? "\"\"" : v, doc, "");
  }
  void field(std::string_view key, std::vector<double>& v, std::string_view doc, size_t n,
             RealRange r) override {
    std::vector<std::string> parts;
    for (double d : v) parts.push_back(fmt_real(d));
    row(key, std::to_string(n) + " floats", "[" + join(parts, ", ") + "]", doc, range_text(r));
  }
  void field(std::string_view key, std::vector<std::string>& v, std::string_view doc) override {
    row(key, "list of strings", "[" + join(v, ", ") + "]", doc, "");
  }
  void choice_index(std::string_view key, int& index, std::span<const std::string_view> names,
                    std::string_view doc) override {
    std::vector<std::string> all(names.begin(), names.end());
    row(key, join(all, " \\| "), std::string(names[index]), doc, "");
  }
  void section(std::string_view key, Section& s, std::string_view) override {
    Documenter sub(join_path(prefix_, key));
    s.visit(sub);
    rows.insert(rows.end(), sub.rows.begin(), sub.rows.end());
    paths.insert(paths.end(), sub.paths.begin(), sub.paths.end());
  }
  void section_list(std::string_view key, SectionList& list, std::string_view doc) override {
    row(key, "list of sections", "[]", doc, "");
    Documenter sub(join_path(prefix_, key) + "[]");
    list.prototype()->visit(sub);
    rows.insert(rows.end(), sub.rows.begin(), sub.rows.end());
  }

  std::vector<std::string> rows;
  std::vector<std::string> paths;

 private:
  void row(std::string_view key, const std::string& type, const std::string& def,
           std::string_view doc, const std::string& range) {
    std::string path = join_path(prefix_, key);
    paths.push_back(path);
    std::string d(doc);
    if (!range.empty()) d += " (" + range + ")";
    rows.push_back("| `" + path + "` | " + type + " | `" + def + "` | " + d + " |");
  }
  std::string prefix_;
};

}  // namespace

void read_section(Section& root, const Node& tree) {
  std::map<std::string, Source> sources;
  Reader reader(tree, "", sources, tree.source);
  reader.read(root);
}

std::string write_section(Section& root) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Writer w(out);
  root.visit(w);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

std::string reference_table(Section& root) {
  Documenter d;
  root.visit(d);
  return "| key | type | default | meaning |\n|---|---|---|---|\n" + join(d.rows, "\n") + "\n";
}

std::vector<std::string> key_paths(Section& root) {
  Documenter d;
  root.visit(d);
  return d.paths;
}

}  // namespace deepthin::config
