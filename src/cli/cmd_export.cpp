// deepthin export RUN_OR_DIR --format gguf|executorch|hf --out PATH [--quant Q] [--expand-shared]
//                 [--tokenizer FILE] [--name NAME] [--max-seq-len N] [--force]
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/args.h"
#include "cli/commands.h"
#include "export/executorch.h"
#include "export/gguf.h"
#include "export/hf.h"
#include "storage/model_dir.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/paths.h"

namespace deepthin::cli {

namespace {

namespace fs = std::filesystem;

std::string human_bytes(int64_t b) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MB", static_cast<double>(b) / 1e6);
  return buf;
}

// The tokenizer a format embeds: --tokenizer, else the model directory's tokenizer.model.
fs::path find_tokenizer(const Args& args, const fs::path& dir) {
  if (args.has("tokenizer")) {
    fs::path p = args.get("tokenizer");
    if (!fs::exists(p)) fail_input("--tokenizer " + p.string() + " does not exist");
    return p;
  }
  return fs::exists(dir / "tokenizer.model") ? dir / "tokenizer.model" : fs::path();
}

// The command's arguments.
Args export_args() {
  return Args(
      "export",
      "deepthin export RUN_OR_DIR --format gguf|executorch|hf --out PATH [--quant Q] "
      "[--expand-shared] [--tokenizer FILE] [--name NAME] [--max-seq-len N] [--force]",
      "Export a run's newest checkpoint or a model directory for a runtime: a llama.cpp GGUF file "
      "(tokenizer embedded), an ExecuTorch .pte for the XNNPACK backend, or a Hugging Face "
      "directory. Prints a JSON summary.",
      {"RUN_OR_DIR"},
      {{"format", "F", "gguf, executorch or hf"},
       {"out", "PATH", "The file (gguf, executorch) or directory (hf) to write"},
       {"quant", "Q",
        "gguf: f32, f16 (default), bf16, q8_0, q4_0; executorch: fp32 (default), 8da4w; hf: fp32 "
        "(default), bf16"},
       {"expand-shared", "",
        "Write a layer-shared model's blocks once per effective layer (needed for hf; gguf always "
        "does)"},
       {"tokenizer", "FILE",
        "SentencePiece model (default: tokenizer.model in the model directory)"},
       {"name", "NAME", "general.name of a GGUF file (default: the model directory's name)"},
       {"max-seq-len", "N", "executorch: KV-cache length (default: model.max_seq_len)"},
       {"force", "", "Replace PATH if it exists"}});
}

// What one export needs: the parsed options, the model directory and the tokenizer it embeds.
struct ExportJob {
  std::string format;
  fs::path out;
  std::string quant;
  fs::path dir;
  fs::path tokenizer;
};

// Options are checked before any model is read.
ExportJob check_options(const Args& args) {
  ExportJob job;
  job.format = args.get("format");
  const std::string& format = job.format;
  if (format != "gguf" && format != "executorch" && format != "hf")
    fail_input("deepthin export: --format must be gguf, executorch or hf" +
               (format.empty() ? std::string(" (it is missing)") : ", not '" + format + "'"));
  if (!args.has("out")) fail_input("deepthin export: --out PATH is required");
  job.out = args.get("out");
  job.quant = args.get("quant", format == "gguf" ? "f16" : format == "hf" ? "fp32" : "fp32");
  const std::string& quant = job.quant;
  if (format == "gguf") exports::parse_gguf_type(quant);
  if (format == "hf" && quant != "fp32" && quant != "bf16")
    fail_input("deepthin export: --quant for --format hf is fp32 or bf16, not '" + quant + "'");
  job.dir = train::model_dir_of(args.positional(0), "deepthin export");
  job.tokenizer = find_tokenizer(args, job.dir);
  // --out may replace only an earlier export of the same format (util/paths.h), never the model
  // being read, a run, or a file deepthin did not write.
  check_output(job.out,
               format == "gguf" ? exports::gguf_output()
               : format == "hf" ? exports::hf_dir_output()
                                : exports::pte_output(),
               OutputRules{"deepthin export",
                           "--out",
                           args.has("force"),
                           {job.dir, args.positional(0), job.tokenizer}});
  return job;
}

// A llama.cpp GGUF file; a layer-shared model is expanded, which stderr says.
void export_gguf(const Args& args, const ExportJob& job, const storage::LoadedModel& loaded,
                 Json& report) {
  const auto& m = loaded.config.model;
  exports::check_gguf_expressible(m, exports::parse_gguf_type(job.quant));
  if (job.tokenizer.empty())
    fail_input("deepthin export: a GGUF file embeds the tokenizer, and " + job.dir.string() +
               " holds no tokenizer.model; pass --tokenizer FILE");
  const std::string name =
      args.get("name", fs::absolute(job.dir).lexically_normal().filename().string());
  auto r = exports::write_gguf(job.out, loaded, job.tokenizer, exports::parse_gguf_type(job.quant),
                               name);
  report["bytes"] = r.file_bytes;
  report["tensors"] = static_cast<int64_t>(r.tensors.size());
  report["block_count"] = r.block_count;
  Json types = Json::object();
  for (const auto& t : r.tensors) types[t.name] = exports::gguf_type_name(t.type);
  report["tensor_types"] = std::move(types);
  if (m.layer_sharing.repeats > 1) {
    std::fprintf(
        stderr,
        "deepthin export: layer sharing (%s × %lld): a GGUF runs its blocks in order, so "
        "the %lld physical blocks are written once per effective layer (%lld blocks, "
        "%s in all)\n",
        std::string(config::kSharingSchemes[static_cast<int>(m.layer_sharing.scheme)]).c_str(),
        static_cast<long long>(m.layer_sharing.repeats), static_cast<long long>(m.n_layers),
        static_cast<long long>(r.block_count), human_bytes(r.file_bytes).c_str());
    report["expanded_shared"] = true;
  }
}

// A Hugging Face directory.
void export_hf(const Args& args, const ExportJob& job, const storage::LoadedModel& loaded,
               Json& report) {
  exports::HfExportOptions o;
  o.expand_shared = args.has("expand-shared");
  o.dtype = job.quant == "bf16" ? at::kBFloat16 : at::kFloat;
  o.tokenizer = job.tokenizer;
  exports::write_hf_dir(job.out, loaded, o);
  if (job.tokenizer.empty())
    std::fprintf(stderr,
                 "deepthin export: no tokenizer.model in %s: the directory has no tokenizer\n",
                 job.dir.string().c_str());
  report["tokenizer"] = !job.tokenizer.empty();
}

// An ExecuTorch .pte, written by the exporter script in the export Python.
void export_executorch(const Args& args, const ExportJob& job, const storage::LoadedModel& loaded,
                       Json& report) {
  exports::ExecutorchOptions o;
  o.quant = job.quant;
  o.max_seq_len = args.get_int("max-seq-len", 0, 0, INT64_MAX);
  o.expand_shared = args.has("expand-shared");
  const char* py = std::getenv("DEEPTHIN_EXPORT_PYTHON");
  o.python = py && *py ? py : DEEPTHIN_EXPORT_PYTHON;
  const char* script = std::getenv("DEEPTHIN_EXPORT_SCRIPT");
  o.script = script && *script
                 ? fs::path(script)
                 : fs::path(DEEPTHIN_SOURCE_DIR) / "scripts" / "export" / "executorch_export.py";
  report["exporter"] = exports::write_executorch(job.out, job.dir, loaded.config.model, o);
  std::error_code ec;
  if (fs::exists(job.out, ec)) report["bytes"] = static_cast<int64_t>(fs::file_size(job.out));
}

}  // namespace

int run_export(const Argv& argv) {
  Args args = export_args();
  if (!args.parse(argv)) return 0;
  const ExportJob job = check_options(args);
  auto loaded = storage::load_model_dir(job.dir);

  Json report = Json::object();
  report["format"] = job.format;
  report["quant"] = job.quant;
  report["out"] = job.out.string();
  report["model"] = job.dir.string();
  if (job.format == "gguf")
    export_gguf(args, job, loaded, report);
  else if (job.format == "hf")
    export_hf(args, job, loaded, report);
  else
    export_executorch(args, job, loaded, report);
  std::printf("%s\n", json::dump(report, 2).c_str());
  return 0;
}

}  // namespace deepthin::cli
