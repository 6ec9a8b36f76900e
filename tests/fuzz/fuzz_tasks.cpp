// Eval task files (deepthin eval --data): the first byte picks one of the eight tasks, the rest is
// its JSONL. load_task may only fail with deepthin::Error; every item it builds has as many
// contexts as continuations and choices, a gold among them, and text that survives the UTF-8
// round trip of util/unicode.h byte for byte.
#include <cstdint>
#include <string>

#include "eval/tasks.h"
#include "fuzz_util.h"
#include "util/unicode.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const auto& names = deepthin::eval::known_tasks();
  const std::string task = names[data[0] % names.size()];
  const auto dir = deepthin::fuzz::scratch() / "tasks";
  std::filesystem::create_directories(dir);
  deepthin::fuzz::write_file("tasks/" + task + ".jsonl", data + 1, size - 1);
  deepthin::fuzz::expect_clean([&] {
    const auto t = deepthin::eval::load_task(task, dir, 0);
    for (const auto& it : t.items) {
      if (it.contexts.size() != it.continuations.size() || it.choices.size() != it.contexts.size() ||
          it.gold < 0 || it.gold >= static_cast<int>(it.choices.size()))
        __builtin_trap();
      for (const auto* v : {&it.contexts, &it.continuations, &it.choices})
        for (const auto& s : *v)
          if (deepthin::unicode::encode(deepthin::unicode::decode(s)) != s) __builtin_trap();
    }
  });
  return 0;
}
