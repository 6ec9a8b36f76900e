#include "export/executorch.h"

#include <unistd.h>

#include <cctype>
#include <filesystem>

#include "util/error.h"
#include "util/process.h"

namespace deepthin::exports {

void check_executorch_options(const config::ModelConfig& m, const ExecutorchOptions& o) {
  if (o.quant != "fp32" && o.quant != "8da4w")
    fail_input("unknown ExecuTorch quantization '" + o.quant + "'; expected fp32 or 8da4w");
  if (o.max_seq_len < 0 || o.max_seq_len > m.max_seq_len)
    fail_input("--max-seq-len " + std::to_string(o.max_seq_len) + " must be 1…" +
               std::to_string(m.max_seq_len) + " (model.max_seq_len)");
  if (o.quant == "8da4w") {
    auto need = [&](int64_t v, const char* key) {
      if (v % 32 != 0)
        fail_input(std::string(key) + " is " + std::to_string(v) +
                   ": 8da4w quantizes linear-layer weights in groups of 32 inputs, so it must be a "
                   "multiple of 32 (use fp32)");
    };
    need(m.dim, "model.dim");
    need(m.ffn.hidden_dim, "model.ffn.hidden_dim");
    need(m.q_dim(), "model.n_heads × model.head_dim");
  }
}

OutputKind pte_output() {
  return {"an ExecuTorch program", false, {}, "", [](const std::filesystem::path& p) {
            const std::string h = read_prefix(p, 8);
            return h.size() == 8 && h[4] == 'E' && h[5] == 'T' && std::isdigit(h[6]) &&
                   std::isdigit(h[7]);
          }};
}

Json write_executorch(const std::filesystem::path& out, const std::filesystem::path& model_dir,
                      const config::ModelConfig& m, const ExecutorchOptions& o) {
  check_executorch_options(m, o);
  std::error_code ec;
  if (!std::filesystem::exists(o.python, ec) && o.python.find('/') != std::string::npos)
    fail_input("ExecuTorch's exporter runs in its own environment, and " + o.python +
               " does not exist: run scripts/setup_export.sh, or point DEEPTHIN_EXPORT_PYTHON at a "
               "Python with executorch 1.5 and torchao 0.18");
  if (!std::filesystem::exists(o.script, ec))
    fail_input("the ExecuTorch exporter script " + o.script.string() + " is missing");
  std::string schedule;
  auto order = m.layer_schedule();
  for (size_t i = 0; i < order.size(); ++i) schedule += (i ? "," : "") + std::to_string(order[i]);
  const auto tmp =
      out.parent_path() / (out.filename().string() + ".tmp." + std::to_string(getpid()));
  std::vector<std::string> argv{
      o.python,        o.script.string(),
      "--model-dir",   model_dir.string(),
      "--out",         tmp.string(),
      "--quant",       o.quant,
      "--schedule",    schedule,
      "--max-seq-len", std::to_string(o.max_seq_len > 0 ? o.max_seq_len : m.max_seq_len)};
  if (o.expand_shared) argv.push_back("--expand-shared");
  auto r = run_process(argv);
  if (r.status != 0) {
    std::filesystem::remove(tmp, ec);
    const std::string what = "the ExecuTorch exporter (" + o.script.string() +
                             ") failed with status " + std::to_string(r.status) +
                             "; its messages are above";
    if (r.status == 2) fail_input(what);
    fail_runtime(what);
  }
  std::filesystem::rename(tmp, out, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    fail_runtime("cannot move the exported program to " + out.string());
  }
  Json report = Json::object();
  try {
    const auto last = r.out.find_last_of('\n', r.out.size() > 1 ? r.out.size() - 2 : 0);
    report = json::parse(r.out.substr(last == std::string::npos ? 0 : last + 1));
  } catch (const std::exception&) {
    report["exporter_output"] = r.out;
  }
  return report;
}

}  // namespace deepthin::exports
