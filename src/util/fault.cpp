#include "util/fault.h"

#include <cstdlib>
#include <string>
#include <vector>

#include "util/strings.h"

namespace deepthin {

bool fault_at(std::string_view fault, int64_t step) {
  static const std::vector<std::string> specs = [] {
    const char* env = std::getenv("DEEPTHIN_FAULT");
    return env ? split(env, ',') : std::vector<std::string>{};
  }();
  for (const auto& s : specs) {
    auto colon = s.find(':');
    if (colon == std::string::npos) continue;
    if (s.substr(0, colon) == fault && parse_int(s.substr(colon + 1)) == step) return true;
  }
  return false;
}

}  // namespace deepthin
