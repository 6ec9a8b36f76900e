// Shared by the fuzz targets (libFuzzer, clang): a private scratch directory per process, and the
// rule every target checks — a reader of outside bytes may only fail with deepthin::Error (exit 2
// or 1 with a message); any other exception, a crash, a hang or a sanitizer report is a finding.
#pragma once

#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "util/error.h"

namespace deepthin::fuzz {

inline const std::filesystem::path& scratch() {
  static const std::filesystem::path dir = [] {
    auto d =
        std::filesystem::temp_directory_path() / ("deepthin-fuzz-" + std::to_string(::getpid()));
    std::filesystem::create_directories(d);
    return d;
  }();
  return dir;
}

inline std::filesystem::path write_file(const std::string& name, const uint8_t* data, size_t size) {
  auto p = scratch() / name;
  std::ofstream(p, std::ios::binary | std::ios::trunc)
      .write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  return p;
}

// Runs f; deepthin's own errors are the expected outcome for bad input.
template <class F>
void expect_clean(F&& f) {
  try {
    f();
  } catch (const deepthin::Error&) {
  }
}

}  // namespace deepthin::fuzz
