// Command-line parsing for the subcommands: declared options, `--name value` or `--name=value`,
// repeatable options (--set), positionals, and errors that list what is allowed.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace deepthin::cli {

struct Option {
  std::string name;     // without the leading dashes
  std::string metavar;  // empty: a switch that takes no value
  std::string help;
  bool repeated = false;
};

class Args {
 public:
  // usage: e.g. "deepthin init CONFIG --out DIR [options]"; positionals: names of required ones.
  Args(std::string command, std::string usage, std::string summary,
       std::vector<std::string> positionals, std::vector<Option> options);
  // Returns false when --help was asked for, after printing the help text to stdout.
  bool parse(const std::vector<std::string>& argv);

  const std::string& positional(size_t i) const { return positional_values_.at(i); }
  bool has(const std::string& name) const;
  std::string get(const std::string& name, const std::string& fallback = "") const;
  std::optional<std::string> maybe(const std::string& name) const;
  std::vector<std::string> all(const std::string& name) const;
  int64_t get_int(const std::string& name, int64_t fallback) const;
  // The same, range-checked: an input error naming the option when outside [lo, hi].
  int64_t get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const;
  // A finite number in [lo, hi] (or (lo, hi] with lo_open): an input error naming the option for
  // anything else, NaN and ±inf included.
  double get_double(const std::string& name, double fallback, double lo, double hi,
                    bool lo_open = false) const;
  std::string help() const;

 private:
  const Option* find(const std::string& name) const;
  std::string command_, usage_, summary_;
  std::vector<std::string> positional_names_;
  std::vector<Option> options_;
  std::vector<std::string> positional_values_;
  std::map<std::string, std::vector<std::string>> values_;
};

// The --set option every config-taking subcommand accepts.
Option set_option();

// `deepthin GROUP NAME …`: runs the subcommand NAME with the remaining arguments.
struct Subcommand {
  const char* name;
  int (*run)(const std::vector<std::string>&);
};
int dispatch_subcommand(const std::string& group, std::initializer_list<Subcommand> subs,
                        const std::vector<std::string>& argv);

}  // namespace deepthin::cli
