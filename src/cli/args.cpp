#include "cli/args.h"

#include <cmath>
#include <cstdint>

#include <cstdio>

#include "util/error.h"
#include "util/strings.h"

namespace deepthin::cli {

Args::Args(std::string command, std::string usage, std::string summary,
           std::vector<std::string> positionals, std::vector<Option> options)
    : command_(std::move(command)),
      usage_(std::move(usage)),
      summary_(std::move(summary)),
      positional_names_(std::move(positionals)),
      options_(std::move(options)) {
  options_.push_back({"help", "", "Show this help"});
}

const Option* Args::find(const std::string& name) const {
  for (const auto& o : options_)
    if (o.name == name) return &o;
  return nullptr;
}

bool Args::parse(const std::vector<std::string>& argv) {
  for (size_t i = 0; i < argv.size(); ++i) {
    const std::string& a = argv[i];
    if (a.size() > 2 && a.substr(0, 2) == "--") {
      std::string name = a.substr(2);
      std::optional<std::string> value;
      if (size_t eq = name.find('='); eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
      }
      const Option* opt = find(name);
      if (!opt) {
        std::vector<std::string> names;
        for (const auto& o : options_) names.push_back(o.name);
        std::string msg = "deepthin " + command_ + ": unknown option --" + name;
        if (auto near = nearest(name, names)) msg += "; did you mean --" + *near + "?";
        fail_input(msg + "\nusage: " + usage_);
      }
      if (opt->name == "help") {
        std::fputs(help().c_str(), stdout);
        return false;
      }
      if (opt->metavar.empty()) {
        if (value) fail_input("deepthin " + command_ + ": --" + name + " takes no value");
        values_[name].push_back("true");
        continue;
      }
      if (!value) {
        if (i + 1 >= argv.size())
          fail_input("deepthin " + command_ + ": --" + name + " needs a value (" + opt->metavar +
                     ")");
        value = argv[++i];
      }
      if (!opt->repeated && values_.count(name))
        fail_input("deepthin " + command_ + ": --" + name + " given more than once");
      values_[name].push_back(*value);
    } else if (a == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    } else {
      positional_values_.push_back(a);
    }
  }
  if (positional_values_.size() != positional_names_.size()) {
    std::string msg = "deepthin " + command_ + ": expected " +
                      (positional_names_.empty() ? std::string("no positional arguments")
                                                 : join(positional_names_, " "));
    msg += ", got " + (positional_values_.empty() ? std::string("none")
                                                  : "'" + join(positional_values_, " ") + "'");
    fail_input(msg + "\nusage: " + usage_);
  }
  return true;
}

bool Args::has(const std::string& name) const {
  return values_.count(name) > 0;
}

std::optional<std::string> Args::maybe(const std::string& name) const {
  auto it = values_.find(name);
  if (it == values_.end()) return std::nullopt;
  return it->second.back();
}

std::string Args::get(const std::string& name, const std::string& fallback) const {
  return maybe(name).value_or(fallback);
}

std::vector<std::string> Args::all(const std::string& name) const {
  auto it = values_.find(name);
  return it == values_.end() ? std::vector<std::string>{} : it->second;
}

int64_t Args::get_int(const std::string& name, int64_t fallback) const {
  auto v = maybe(name);
  if (!v) return fallback;
  auto parsed = parse_int(*v);
  if (!parsed)
    fail_input("deepthin " + command_ + ": --" + name + " expects an integer, got '" + *v + "'");
  return *parsed;
}

int64_t Args::get_int(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
  const int64_t v = get_int(name, fallback);
  if (v < lo || v > hi)
    fail_input("deepthin " + command_ + ": --" + name + " must be " +
               (hi == INT64_MAX ? "at least " + std::to_string(lo)
                                : "in " + std::to_string(lo) + "…" + std::to_string(hi)) +
               ", got " + std::to_string(v));
  return v;
}

double Args::get_double(const std::string& name, double fallback, double lo, double hi,
                        bool lo_open) const {
  auto v = maybe(name);
  if (!v) return fallback;
  auto parsed = parse_double(*v);
  if (!parsed)
    fail_input("deepthin " + command_ + ": --" + name + " expects a number, got '" + *v + "'");
  const double d = *parsed;
  if (!std::isfinite(d) || (lo_open ? d <= lo : d < lo) || d > hi) {
    auto num = [](double x) {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%g", x);
      return std::string(buf);
    };
    fail_input("deepthin " + command_ + ": --" + name + " must be a finite number " +
               (lo_open ? "> " : ">= ") + num(lo) + " and <= " + num(hi) + ", got '" + *v + "'");
  }
  return d;
}

std::string Args::help() const {
  std::string out = "usage: " + usage_ + "\n\n" + summary_ + "\n\noptions:\n";
  for (const auto& o : options_) {
    std::string left = "  --" + o.name + (o.metavar.empty() ? "" : " " + o.metavar);
    if (left.size() < 26) left.append(26 - left.size(), ' ');
    out += left + " " + o.help + (o.repeated ? " (repeatable)" : "") + "\n";
  }
  return out;
}

int dispatch_subcommand(const std::string& group, std::initializer_list<Subcommand> subs,
                        const std::vector<std::string>& argv) {
  std::vector<std::string> names;
  for (const auto& s : subs) names.push_back(s.name);
  const std::string usage = "usage: deepthin " + group + " " + join(names, "|") + " [options]";
  if (argv.empty()) fail_input(usage);
  if (argv[0] == "--help" || argv[0] == "-h") {
    std::printf("%s\n", usage.c_str());
    return 0;
  }
  for (const auto& s : subs)
    if (argv[0] == s.name) return s.run(std::vector<std::string>(argv.begin() + 1, argv.end()));
  std::string msg = "unknown " + group + " subcommand '" + argv[0] + "'";
  if (auto near = nearest(argv[0], names)) msg += "; did you mean '" + *near + "'?";
  fail_input(msg + "\n" + usage);
}

Option set_option() {
  return {"set", "KEY=VALUE", "Override a config key, e.g. --set model.n_layers=24", true};
}

}  // namespace deepthin::cli
