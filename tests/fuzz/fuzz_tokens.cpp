// The token file of `deepthin score` (token ids, one sequence per line): every input must parse or
// fail with deepthin's own error naming the line.
#include <cstdint>

#include "eval/score.h"
#include "fuzz_util.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deepthin;
  fuzz::expect_clean([&] {
    auto p = fuzz::write_file("tokens.txt", data, size);
    auto seqs = eval::read_token_lines(p, /*vocab_size=*/32000, /*max_len=*/64);
    for (const auto& s : seqs)
      if (s.size() < 2 || s.size() > 64) __builtin_trap();
  });
  return 0;
}
