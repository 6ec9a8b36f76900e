// Compiled in its own object library without LibTorch's include path (see log.h).
#include "util/log.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <mutex>

namespace deepthin::log {

namespace {

spdlog::level::level_enum to_spdlog(Level l) {
  switch (l) {
    case Level::debug:
      return spdlog::level::debug;
    case Level::info:
      return spdlog::level::info;
    case Level::warn:
      return spdlog::level::warn;
    case Level::error:
      return spdlog::level::err;
  }
  return spdlog::level::info;
}

std::mutex g_mutex;

std::shared_ptr<spdlog::logger>& logger() {
  static std::shared_ptr<spdlog::logger> l = [] {
    auto sink = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    auto lg = std::make_shared<spdlog::logger>("deepthin", sink);
    lg->set_pattern("%^[%H:%M:%S %l]%$ %v");
    return lg;
  }();
  return l;
}

}  // namespace

void write(Level level, const std::string& message) {
  std::lock_guard<std::mutex> lock(g_mutex);
  logger()->log(to_spdlog(level), "{}", message);
}

void configure(bool console, const std::string& file_path, Level level) {
  std::lock_guard<std::mutex> lock(g_mutex);
  std::vector<spdlog::sink_ptr> sinks;
  if (console) {
    auto s = std::make_shared<spdlog::sinks::stderr_color_sink_mt>();
    s->set_pattern("%^[%H:%M:%S %l]%$ %v");
    sinks.push_back(s);
  }
  if (!file_path.empty()) {
    auto s = std::make_shared<spdlog::sinks::basic_file_sink_mt>(file_path, /*truncate=*/false);
    s->set_pattern("[%Y-%m-%d %H:%M:%S.%e %l] %v");
    sinks.push_back(s);
  }
  auto lg = std::make_shared<spdlog::logger>("deepthin", sinks.begin(), sinks.end());
  lg->set_level(to_spdlog(level));
  lg->flush_on(spdlog::level::warn);
  logger() = lg;
}

std::string fixed(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

std::string sci(double v, int decimals) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*e", decimals, v);
  return buf;
}

void flush() {
  std::lock_guard<std::mutex> lock(g_mutex);
  logger()->flush();
}

}  // namespace deepthin::log
