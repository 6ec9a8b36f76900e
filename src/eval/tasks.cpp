#include "eval/tasks.h"

#include <algorithm>
#include <functional>
#include <map>
#include <sstream>

#include "config/eval_tasks.h"
#include "util/error.h"
#include "util/fs.h"
#include "util/json_io.h"
#include "util/strings.h"
#include "util/unicode.h"

namespace deepthin::eval {

namespace {

// A JSONL line being read: field access with errors that name file, line and field.
struct Doc {
  const Json& j;
  std::string where;

  const Json& field(const std::string& key) const {
    const Json* v = json::find(j, key);
    if (!v) fail_input(where + ": missing field '" + key + "'");
    return *v;
  }
  std::string str(const std::string& key) const {
    const Json& v = field(key);
    if (!v.is_string()) fail_input(where + ": field '" + key + "' must be a string");
    return json::as_string(v);
  }
  std::vector<std::string> strings(const Json& v, const std::string& key) const {
    if (!v.is_array() || v.size() == 0)
      fail_input(where + ": field '" + key + "' must be a non-empty list of strings");
    std::vector<std::string> out;
    for (const auto& e : json::as_array(v)) {
      if (!e.is_string()) fail_input(where + ": field '" + key + "' must hold strings");
      out.push_back(json::as_string(e));
    }
    return out;
  }
  // An integer label. JSON integers and booleans everywhere (BoolQ dumps differ); numeric strings
  // only where lm-eval itself turns a string into a number: SIQA's "{{ (label|int) - 1 }}"
  // (Jinja's int(), which strips whitespace) and HellaSwag's "{{label}}" (str.isdigit, then
  // literal_eval). For BoolQ and PIQA lm-eval would match a string label against the choice
  // texts instead, so a string there is refused rather than scored differently.
  enum class Strings { refused, digits, int_filter };
  int64_t integer(const std::string& key, Strings strings = Strings::refused) const {
    const Json& v = field(key);
    if (v.is_number_integer()) return json::as_int(v);
    if (v.is_boolean()) return json::as_bool(v) ? 1 : 0;
    if (v.is_string() && strings != Strings::refused) {
      std::string s = json::as_string(v);
      if (strings == Strings::int_filter) s = unicode::py_strip(s);
      const bool digits = !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return c >= '0' && c <= '9';
      });
      if (auto n = digits ? parse_int(s) : std::nullopt) return *n;
    }
    fail_input(where + ": field '" + key + "' must be an integer label" +
               (strings == Strings::refused ? std::string()
                                            : std::string(" or a string of ASCII digits")) +
               ", not " + json::dump(v));
  }
  int gold_in(int64_t g, size_t n, const std::string& key) const {
    if (g < 0 || g >= static_cast<int64_t>(n))
      fail_input(where + ": field '" + key + "' gives answer " + std::to_string(g) + " of " +
                 std::to_string(n) + " choices");
    return static_cast<int>(g);
  }
};

McItem shared_context(const std::string& context, const std::vector<std::string>& choices,
                      int gold) {
  McItem it;
  for (const auto& c : choices) {
    it.contexts.push_back(context);
    it.continuations.push_back(" " + c);
  }
  it.choices = choices;
  it.gold = gold;
  return it;
}

// ARC and OpenBookQA: {choices: {text: [...], label: [...]}, answerKey}.
McItem lettered(const Doc& d, const std::string& context, bool strip_key) {
  const Json& choices = d.field("choices");
  if (!choices.is_object()) fail_input(d.where + ": field 'choices' must be {text, label}");
  auto text = d.strings(json::at(choices, "text", d.where), "choices.text");
  auto labels = d.strings(json::at(choices, "label", d.where), "choices.label");
  if (labels.size() != text.size())
    fail_input(d.where + ": choices.text and choices.label differ in length");
  std::string key = d.str("answerKey");
  if (strip_key) key = unicode::py_lstrip(key);
  auto it = std::find(labels.begin(), labels.end(), key);
  if (it == labels.end())
    fail_input(d.where + ": answerKey '" + key + "' is not among choices.label");
  return shared_context(context, text, static_cast<int>(it - labels.begin()));
}

// lm-eval's task code uses Python's str methods; these are the same on every code point
// (util/unicode.h): str.capitalize for HellaSwag's ctx_b, str.strip for its preprocess and for
// WinoGrande's target, str.lstrip for OpenBookQA's answerKey.
using unicode::py_capitalize;
using unicode::py_strip;

std::string replace_all(std::string s, const std::string& from, const std::string& to) {
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = s.find(from, pos)) != std::string::npos; pos = hit + from.size())
    out += s.substr(pos, hit - pos) + to;
  return out + s.substr(pos);
}

using Builder = std::function<McItem(const Doc&)>;

const std::map<std::string, Builder>& builders() {
  static const std::map<std::string, Builder> b = {
      {"arc_easy",
       [](const Doc& d) {
         return lettered(d, "Question: " + d.str("question") + "\nAnswer:", false);
       }},
      {"arc_challenge",
       [](const Doc& d) {
         return lettered(d, "Question: " + d.str("question") + "\nAnswer:", false);
       }},
      {"openbookqa", [](const Doc& d) { return lettered(d, d.str("question_stem"), true); }},
      {"boolq",
       [](const Doc& d) {
         return shared_context(d.str("passage") + "\nQuestion: " + d.str("question") + "?\nAnswer:",
                               {"no", "yes"}, d.gold_in(d.integer("label"), 2, "label"));
       }},
      {"piqa",
       [](const Doc& d) {
         return shared_context(
             "Question: " + d.str("goal") + "\nAnswer:", {d.str("sol1"), d.str("sol2")},
             d.gold_in(d.integer("label"), 2, "label"));
       }},
      {"siqa",
       [](const Doc& d) {
         return shared_context("Q: " + d.str("context") + " " + d.str("question") + "\nA:",
                               {d.str("answerA"), d.str("answerB"), d.str("answerC")},
                               d.gold_in(d.integer("label", Doc::Strings::int_filter) - 1, 3, "label"));
       }},
      {"hellaswag",
       [](const Doc& d) {
         std::vector<std::string> endings;
         for (const auto& e : d.strings(d.field("endings"), "endings"))
           endings.push_back(hellaswag_preprocess(e));
         const std::string query = hellaswag_preprocess(
             d.str("activity_label") + ": " + d.str("ctx_a") + " " + py_capitalize(d.str("ctx_b")));
         return shared_context(query, endings,
                               d.gold_in(d.integer("label", Doc::Strings::digits), endings.size(), "label"));
       }},
      {"winogrande",
       [](const Doc& d) {
         const std::string sentence = d.str("sentence");
         const auto blank = sentence.find('_');
         if (blank == std::string::npos)
           fail_input(d.where + ": field 'sentence' has no '_' blank to fill");
         McItem it;
         const std::string rest = " " + py_strip(sentence.substr(blank + 1));
         for (const auto& opt : {d.str("option1"), d.str("option2")}) {
           it.contexts.push_back(sentence.substr(0, blank) + opt);
           it.continuations.push_back(rest);
           it.choices.push_back(it.contexts.back());
         }
         const std::string answer = d.str("answer");
         if (answer != "1" && answer != "2")
           fail_input(d.where + ": field 'answer' must be \"1\" or \"2\", not \"" + answer + "\"");
         it.gold = answer == "1" ? 0 : 1;
         return it;
       }},
  };
  return b;
}

}  // namespace

const std::vector<std::string>& known_tasks() {
  return config::eval_task_names();
}

Task load_task(const std::string& name, const std::filesystem::path& dir, int64_t limit) {
  auto it = builders().find(name);
  if (it == builders().end()) {
    std::string known;
    for (const auto& n : known_tasks()) known += (known.empty() ? "" : ", ") + n;
    fail_input("unknown task '" + name + "'; known tasks: " + known);
  }
  Task t;
  t.name = name;
  t.file = dir / (name + ".jsonl");
  std::error_code ec;
  if (!std::filesystem::is_regular_file(t.file, ec))
    fail_input("task " + name + ": " + t.file.string() +
               " does not exist (scripts/get_eval_data.sh writes the eight files)");
  std::istringstream lines(read_file(t.file, "task file"));
  std::string line;
  int64_t lineno = 0;
  while (std::getline(lines, line)) {
    ++lineno;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = t.file.string() + ":" + std::to_string(lineno);
    Json j;
    try {
      j = json::parse(line, where);
    } catch (const Error& e) {
      fail_input(std::string(e.what()));
    }
    if (!j.is_object()) fail_input(where + ": each line must be a JSON object");
    McItem item = it->second(Doc{j, where});
    item.line = lineno;
    t.items.push_back(std::move(item));
    if (limit > 0 && static_cast<int64_t>(t.items.size()) >= limit) break;
  }
  if (t.items.empty()) fail_input(t.file.string() + ": no items");
  return t;
}

std::string hellaswag_preprocess(const std::string& text) {
  std::string s = replace_all(py_strip(text), " [title]", ". ");
  std::string out;  // drop [ … ] spans (non-greedy, within a line), as re.sub("\\[.*?\\]", "")
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '[') {
      const auto close = s.find_first_of("]\n", i + 1);
      if (close != std::string::npos && s[close] == ']') {
        i = close;
        continue;
      }
    }
    out += s[i];
  }
  return replace_all(out, "  ", " ");
}

int64_t utf8_length(const std::string& s) {
  return unicode::py_len(s);
}

}  // namespace deepthin::eval
