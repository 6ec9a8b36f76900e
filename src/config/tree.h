// The raw config tree: YAML as read, every value remembering the file, line and column it came
// from.
//
// load_tree() resolves `base:` inheritance (paths relative to the including file, cycles reported)
// and apply_set() applies `--set a.b=value` overrides. Typed structs are filled from this tree by
// config/schema.h; errors about a key are reported at the place the key was written.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace deepthin::config {

struct Source {
  std::string file;  // a path, or "--set key=value" for command-line overrides; empty when unknown
  int line = 0;      // 1-based; 0 when unknown
  int column = 0;
  std::string str() const;  // "configs/x.yaml:12:3", "--set model.dim=3", "(built-in default)"
};

struct Node {
  struct Entry;  // key and value (std::pair of an incomplete Node does not compile with clang)
  enum class Kind { null, scalar, sequence, map };
  Kind kind = Kind::null;
  std::string scalar;
  bool quoted = false;  // a quoted scalar is a string, never a number or a boolean
  std::vector<Node> items;
  std::vector<Entry> entries;
  Source source;

  Node* find(std::string_view key);
  const Node* find(std::string_view key) const;
  void erase(std::string_view key);
  std::string describe() const;  // "a mapping", "a list", "'abc'"
};

struct Node::Entry {
  Entry(std::string key, Node value) : first(std::move(key)), second(std::move(value)) {}
  std::string first;
  Node second;
};

// Parses YAML text; `file` names it in errors. Syntax errors become input errors with
// file:line:col.
Node parse_yaml(std::string_view text, const std::string& file);
// Reads a config file and everything it inherits through `base:` (a path or a list of paths, merged
// in order, later ones winning; the including file wins over all of them).
Node load_tree(const std::filesystem::path& path);
// Deep-merges `over` into `base`: maps merge key by key, anything else is replaced.
void merge_into(Node& base, const Node& over);
// Applies one "a.b.c=value" override; the value is parsed as YAML (so "[0.9, 0.95]" is a list).
void apply_set(Node& root, std::string_view assignment);

}  // namespace deepthin::config
