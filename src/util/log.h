// Logging facade over spdlog.
//
// LibTorch ships its own fmt headers, which shadow the system fmt that spdlog is built against, so
// no translation unit may include both. Everything that logs includes this header instead: messages
// are formatted here with "{}" placeholders (each replaced by the next argument through operator<<)
// and handed to spdlog in log.cpp, which is compiled without torch's include path.
//
// Policy: rank 0 logs to the console (stderr; stdout is for command output); every rank can also
// log to its own file in the run directory.
#pragma once

#include <sstream>
#include <string>
#include <string_view>

namespace deepthin::log {

enum class Level { debug, info, warn, error };

// "{}" placeholders take the arguments in order; "{{" and "}}" are literal braces.
template <class... Args>
std::string format(std::string_view fmt, const Args&... args);

void write(Level level, const std::string& message);
// Console output on (rank 0) or off (other ranks); file output to `path` when not empty.
void configure(bool console, const std::string& file_path, Level level = Level::info);
// Flush file sinks (before a checkpoint or an exit).
void flush();

template <class... Args>
void debug(std::string_view fmt, const Args&... args) {
  write(Level::debug, format(fmt, args...));
}
template <class... Args>
void info(std::string_view fmt, const Args&... args) {
  write(Level::info, format(fmt, args...));
}
template <class... Args>
void warn(std::string_view fmt, const Args&... args) {
  write(Level::warn, format(fmt, args...));
}
template <class... Args>
void error(std::string_view fmt, const Args&... args) {
  write(Level::error, format(fmt, args...));
}

// Number formatting for messages: fixed(3.14159, 2) == "3.14", sci(0.00012, 2) == "1.20e-04".
std::string fixed(double v, int decimals);
std::string sci(double v, int decimals);

namespace detail {
inline void format_rest(std::ostringstream& out, std::string_view fmt) {
  for (size_t i = 0; i < fmt.size(); ++i) {
    if ((fmt[i] == '{' || fmt[i] == '}') && i + 1 < fmt.size() && fmt[i + 1] == fmt[i]) ++i;
    out << fmt[i];
  }
}
template <class T, class... Rest>
void format_rest(std::ostringstream& out, std::string_view fmt, const T& first,
                 const Rest&... rest) {
  for (size_t i = 0; i < fmt.size(); ++i) {
    if ((fmt[i] == '{' || fmt[i] == '}') && i + 1 < fmt.size() && fmt[i + 1] == fmt[i]) {
      out << fmt[i++];
    } else if (fmt[i] == '{' && i + 1 < fmt.size() && fmt[i + 1] == '}') {
      out << first;
      format_rest(out, fmt.substr(i + 2), rest...);
      return;
    } else {
      out << fmt[i];
    }
  }
}
}  // namespace detail

template <class... Args>
std::string format(std::string_view fmt, const Args&... args) {
  std::ostringstream out;
  detail::format_rest(out, fmt, args...);
  return out.str();
}

}  // namespace deepthin::log
