// deepthin::Error: the one exception type library code throws.
//
// Every message says what was wrong, where (file:line or key path) and what is allowed. The kind
// picks the CLI's exit status: bad input or config exits 2, a failure at run time exits 1.
#pragma once

#include <stdexcept>
#include <string>

namespace deepthin {

enum class ErrorKind { input, runtime };

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, const std::string& message) : std::runtime_error(message), kind_(kind) {}
  ErrorKind kind() const { return kind_; }
  int exit_code() const { return kind_ == ErrorKind::input ? 2 : 1; }

 private:
  ErrorKind kind_;
};

// Bad input from the user: a config, a file, a flag. Exit status 2.
[[noreturn]] inline void fail_input(const std::string& message) {
  throw Error(ErrorKind::input, message);
}
// A failure while running (I/O, numerics, a peer process). Exit status 1.
[[noreturn]] inline void fail_runtime(const std::string& message) {
  throw Error(ErrorKind::runtime, message);
}

}  // namespace deepthin
