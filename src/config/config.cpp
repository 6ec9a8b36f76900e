#include "config/config.h"

#include "util/error.h"

namespace deepthin::config {

void Config::visit(Visitor& v) {
  v.section("run", run, "Run naming");
  v.section("model", model, "Decoder shape");
  v.section("data", data, "Training and validation tokens");
  v.section("train", train, "Batching, length, precision");
  v.section("optimizer", optimizer, "AdamW");
  v.section("schedule", schedule, "Learning-rate schedule");
  v.section("eval", eval, "Validation");
  v.section("checkpoint", checkpoint, "Checkpoints");
  v.section("log", log, "Metrics logging");
  v.section("distributed", distributed, "Data parallelism across processes (torchrun, SLURM)");
  v.section("kd", kd, "Knowledge distillation from a teacher model");
}

void Config::finalize() {
  if (train.seq_len == 0) train.seq_len = model.max_seq_len;
}

void Config::check(const Checker& c) const {
  c.require(train.seq_len <= model.max_seq_len, "train.seq_len",
            "seq_len " + std::to_string(train.seq_len) + " exceeds model.max_seq_len " +
                std::to_string(model.max_seq_len));
  c.require(kd.cache.empty() || kd.loss == KdLossType::forward_kl, "kd.loss",
            std::string("kd.cache holds the teacher's top-k tokens only, from which forward_kl "
                        "alone can be computed; got ") +
                std::string(kKdLosses[static_cast<int>(kd.loss)]) +
                " (set kd.loss: forward_kl, or distill from kd.teacher)");
}

namespace {
Config from_tree(Node tree, const std::vector<std::string>& sets) {
  if (tree.kind != Node::Kind::map)
    fail_input(tree.source.str() + ": a config must be a mapping of sections, got " +
               tree.describe());
  for (const auto& s : sets) apply_set(tree, s);
  Config c;
  read_section(c, tree);
  return c;
}
}  // namespace

Config load_config(const std::filesystem::path& path, const std::vector<std::string>& sets) {
  return from_tree(load_tree(path), sets);
}

Config parse_config(const std::string& text, const std::string& where,
                    const std::vector<std::string>& sets) {
  Node tree = parse_yaml(text, where);
  if (tree.kind == Node::Kind::null) tree.kind = Node::Kind::map;
  return from_tree(std::move(tree), sets);
}

Config validated(const Config& c, const std::string& where) {
  Node tree = parse_yaml(to_yaml(c), where);
  auto stamp = [&](auto& self, Node& n) -> void {
    n.source = Source{where, 0, 0};
    for (auto& item : n.items) self(self, item);
    for (auto& [k, v] : n.entries) self(self, v);
  };
  stamp(stamp, tree);
  return from_tree(std::move(tree), {});
}

std::string to_yaml(const Config& c) {
  Config copy = c;
  return write_section(copy);
}

std::string reference_markdown() {
  Config c;
  return reference_table(c);
}

}  // namespace deepthin::config
