#include "config/tree.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>

#include "util/error.h"
#include "util/fs.h"
#include "util/strings.h"

namespace deepthin::config {

std::string Source::str() const {
  if (file.empty()) return "(built-in default)";
  if (line <= 0) return file;
  return file + ":" + std::to_string(line) + ":" + std::to_string(column);
}

Node* Node::find(std::string_view key) {
  for (auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

const Node* Node::find(std::string_view key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

void Node::erase(std::string_view key) {
  entries.erase(
      std::remove_if(entries.begin(), entries.end(), [&](const auto& e) { return e.first == key; }),
      entries.end());
}

std::string Node::describe() const {
  switch (kind) {
    case Kind::null:
      return "nothing (null)";
    case Kind::scalar:
      return "'" + scalar + "'";
    case Kind::sequence:
      return "a list";
    case Kind::map:
      return "a mapping";
  }
  return "?";
}

namespace {

// Limits on what a config may be: a regular file of at most 4 MiB, nested at most 64 levels, with
// at most a million nodes once aliases are expanded (a self-referential alias nests without end;
// alias chains can multiply a small file), and at most 32 files along a base: chain.
constexpr uintmax_t kMaxConfigBytes = 4u << 20;
constexpr int kMaxDepth = 64;
constexpr int64_t kMaxNodes = 1'000'000;
constexpr int64_t kMaxExpandedBytes = 64 << 20;  // text of all scalars and keys, aliases expanded
constexpr size_t kMaxBaseChain = 32;

struct ConvertState {
  const std::string& file;
  int64_t nodes = 0;
  int64_t bytes = 0;
  void count_bytes(size_t n, const Source& at) {
    bytes += static_cast<int64_t>(n);
    if (bytes > kMaxExpandedBytes)
      fail_input(at.str() + ": " + file + " expands to more than " +
                 std::to_string(kMaxExpandedBytes >> 20) +
                 " MiB of text once its aliases are expanded; a config is a few kilobytes");
  }
};

Node convert(const YAML::Node& y, ConvertState& st, int depth) {
  const std::string& file = st.file;
  Node n;
  YAML::Mark m = y.Mark();
  n.source = {file, m.line >= 0 ? m.line + 1 : 0, m.column >= 0 ? m.column + 1 : 0};
  if (depth > kMaxDepth)
    fail_input(n.source.str() + ": nested deeper than " + std::to_string(kMaxDepth) +
               " levels (an alias that refers to itself?)");
  if (++st.nodes > kMaxNodes)
    fail_input(file + ": more than " + std::to_string(kMaxNodes) +
               " values once its aliases are expanded; a config is a few hundred");
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = Node::Kind::null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = Node::Kind::scalar;
      n.scalar = y.Scalar();
      n.quoted = y.Tag() == "!";
      st.count_bytes(n.scalar.size(), n.source);
      break;
    case YAML::NodeType::Sequence:
      n.kind = Node::Kind::sequence;
      for (const auto& item : y) n.items.push_back(convert(item, st, depth + 1));
      break;
    case YAML::NodeType::Map:
      n.kind = Node::Kind::map;
      for (const auto& kv : y) {
        if (!kv.first.IsScalar()) {
          YAML::Mark km = kv.first.Mark();
          fail_input(file + ":" + std::to_string(km.line + 1) + ":" +
                     std::to_string(km.column + 1) + ": keys must be plain names");
        }
        std::string key = kv.first.Scalar();
        st.count_bytes(key.size(), n.source);
        if (n.find(key)) {
          YAML::Mark km = kv.first.Mark();
          fail_input(file + ":" + std::to_string(km.line + 1) + ":" +
                     std::to_string(km.column + 1) + ": duplicate key '" + key + "'");
        }
        Node child = convert(kv.second, st, depth + 1);
        if (child.kind == Node::Kind::null) {
          // An empty value has no useful mark of its own: point at its key.
          YAML::Mark km = kv.first.Mark();
          child.source = {file, km.line + 1, km.column + 1};
        }
        n.entries.emplace_back(key, std::move(child));
      }
      break;
  }
  return n;
}

Node load_tree_rec(const fs::path& path, std::vector<fs::path>& stack,
                   const Source& included_from) {
  std::error_code ec;
  if (!fs::exists(path, ec)) {
    if (included_from.file.empty()) fail_input("config file not found: " + path.string());
    fail_input(included_from.str() + ": base: config file not found: " + path.string());
  }
  const std::string at =
      included_from.file.empty() ? std::string() : included_from.str() + ": base: ";
  if (!fs::is_regular_file(path, ec))
    fail_input(at + path.string() + " is not a regular file (a config is a YAML file)");
  if (fs::file_size(path, ec) > kMaxConfigBytes)
    fail_input(at + path.string() + " is " + std::to_string(fs::file_size(path, ec)) +
               " bytes; a config file may have at most " + std::to_string(kMaxConfigBytes));
  if (stack.size() >= kMaxBaseChain)
    fail_input(at + "more than " + std::to_string(kMaxBaseChain) +
               " config files along the base: chain");
  fs::path canon = fs::weakly_canonical(path, ec);
  if (std::find(stack.begin(), stack.end(), canon) != stack.end()) {
    std::vector<std::string> chain;
    for (const auto& p : stack) chain.push_back(p.filename().string());
    chain.push_back(canon.filename().string());
    fail_input(included_from.str() + ": base: cycle of base files: " + join(chain, " -> "));
  }
  stack.push_back(canon);
  Node tree = parse_yaml(read_file(path, "config file"), path.string());
  if (tree.kind == Node::Kind::null) {
    tree.kind = Node::Kind::map;
    tree.source = {path.string(), 1, 1};
  }
  if (tree.kind != Node::Kind::map)
    fail_input(tree.source.str() + ": a config file must be a mapping of sections, got " +
               tree.describe());

  Node merged;
  merged.kind = Node::Kind::map;
  merged.source = tree.source;
  if (const Node* base = tree.find("base")) {
    std::vector<const Node*> bases;
    if (base->kind == Node::Kind::scalar) {
      bases.push_back(base);
    } else if (base->kind == Node::Kind::sequence) {
      for (const auto& item : base->items) bases.push_back(&item);
    }
    if (bases.empty())
      fail_input(base->source.str() + ": base: expected a file path or a list of paths, got " +
                 base->describe());
    for (const Node* b : bases) {
      if (b->kind != Node::Kind::scalar)
        fail_input(b->source.str() + ": base: expected a file path, got " + b->describe());
      fs::path bp = b->scalar;
      if (bp.is_relative()) bp = path.parent_path() / bp;
      merge_into(merged, load_tree_rec(bp, stack, b->source));
    }
    tree.erase("base");
  }
  merge_into(merged, tree);
  merged.source = tree.source;
  stack.pop_back();
  return merged;
}

}  // namespace

Node parse_yaml(std::string_view text, const std::string& file) {
  YAML::Node y;
  try {
    y = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    fail_input(file + ":" + std::to_string(e.mark.line + 1) + ":" +
               std::to_string(e.mark.column + 1) + ": YAML syntax error: " + e.msg);
  }
  ConvertState st{file};
  return convert(y, st, 0);
}

Node load_tree(const std::filesystem::path& path) {
  std::vector<fs::path> stack;
  return load_tree_rec(path, stack, Source{});
}

void merge_into(Node& base, const Node& over) {
  if (base.kind != Node::Kind::map || over.kind != Node::Kind::map) {
    base = over;
    return;
  }
  for (const auto& [k, v] : over.entries) {
    if (Node* existing = base.find(k)) {
      merge_into(*existing, v);
    } else {
      base.entries.emplace_back(k, v);
    }
  }
}

void apply_set(Node& root, std::string_view assignment) {
  std::string where = "--set " + std::string(assignment);
  size_t eq = assignment.find('=');
  if (eq == std::string_view::npos || eq == 0)
    fail_input(where + ": expected --set key.path=value, e.g. --set model.n_layers=24");
  std::string path = trim(assignment.substr(0, eq));
  std::string value(assignment.substr(eq + 1));
  Source src{where, 0, 0};

  Node parsed;
  try {
    ConvertState st{where};
    parsed = convert(YAML::Load(value), st, 0);
  } catch (const YAML::Exception& e) {
    fail_input(where + ": the value is not valid YAML: " + e.msg);
  }
  auto stamp = [&](auto& self, Node& n) -> void {
    n.source = src;
    for (auto& item : n.items) self(self, item);
    for (auto& [k, v] : n.entries) self(self, v);
  };
  stamp(stamp, parsed);

  std::vector<std::string> keys = split(path, '.');
  Node* cur = &root;
  std::string walked;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::string& key = keys[i];
    if (key.empty()) fail_input(where + ": empty key in path '" + path + "'");
    if (cur->kind == Node::Kind::null) cur->kind = Node::Kind::map;
    if (cur->kind != Node::Kind::map)
      fail_input(where + ": " + walked + " is a value, not a section; cannot set '" + path + "'");
    walked += (walked.empty() ? "" : ".") + key;
    Node* next = cur->find(key);
    if (!next) {
      cur->entries.emplace_back(key, Node{});
      next = &cur->entries.back().second;
      next->source = src;
    }
    cur = next;
  }
  *cur = parsed;
}

}  // namespace deepthin::config
