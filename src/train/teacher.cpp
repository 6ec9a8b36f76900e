// Loading distillation's teacher (teacher.h) and checking it against the student.
#include "train/teacher.h"

#include <filesystem>

#include "storage/model_dir.h"
#include "train/checkpoint.h"
#include "train/precision.h"
#include "util/error.h"
#include "util/fs.h"

namespace deepthin::train {

namespace fs = std::filesystem;

Teacher load_teacher(const config::Config& cfg, const c10::Device& student_device) {
  const fs::path dir = model_dir_of(cfg.kd.teacher, "kd.teacher");
  std::error_code ec;
  auto loaded = storage::load_model_dir(dir);
  if (loaded.config.model.vocab_size != cfg.model.vocab_size)
    fail_input("kd.teacher " + dir.string() + " has a vocabulary of " +
               std::to_string(loaded.config.model.vocab_size) + " tokens, the student " +
               std::to_string(cfg.model.vocab_size) +
               ": distillation needs the teacher's tokenizer (same ids) for the student");
  if (fs::exists(dir / "tokenizer.model", ec) && !cfg.data.tokenizer.empty() &&
      sha256_file(dir / "tokenizer.model") != sha256_file(cfg.data.tokenizer))
    fail_input("kd.teacher " + dir.string() + " was trained with another tokenizer than " +
               cfg.data.tokenizer + " (the sha256 of tokenizer.model differs)");
  Teacher t;
  t.dir = dir.string();
  t.device = cfg.kd.device.empty() ? student_device : parse_device(cfg.kd.device);
  t.model = loaded.model;
  for (auto& p : t.model->parameters()) p.requires_grad_(false);
  t.model->eval();
  if (t.device.is_cuda())
    t.model->to(t.device, at::kBFloat16);
  else
    t.model->to(t.device);
  return t;
}

}  // namespace deepthin::train
