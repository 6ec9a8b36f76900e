// Fault injection for tests, read once from DEEPTHIN_FAULT ("name:arg,name:arg"). Production runs
// never set it. Used to prove that a crash in the middle of a checkpoint write leaves a resumable
// run, and that non-finite steps are skipped.
#pragma once

#include <cstdint>
#include <string_view>

namespace deepthin {

// True when DEEPTHIN_FAULT names `fault` with argument `step` (e.g. "nan_at:5" or
// "crash_in_checkpoint:4").
bool fault_at(std::string_view fault, int64_t step);

}  // namespace deepthin
