// The frozen teacher of distillation (kd.teacher): loaded once, checked against the student's
// vocabulary and tokenizer before any step, run in bf16 on GPUs.
#pragma once

#include <c10/core/Device.h>

#include <string>

#include "config/config.h"
#include "model/decoder.h"

namespace deepthin::train {

struct Teacher {
  model::Decoder model{nullptr};
  c10::Device device{c10::kCPU};
  std::string dir;
};

// Loads kd.teacher: a run directory (its newest checkpoint), a deepthin model directory or a
// Hugging Face Llama directory. The vocabulary (and the tokenizer, when both name one) must match
// the student's.
Teacher load_teacher(const config::Config& cfg, const c10::Device& student_device);

}  // namespace deepthin::train
