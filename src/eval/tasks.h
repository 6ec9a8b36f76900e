// The paper's eight zero-shot tasks, read from local JSONL files in the field layout the `datasets`
// library writes for each published dataset, and turned into log-likelihood requests exactly as
// lm-evaluation-harness 0.4 builds them (prompts, answer choices, target delimiter, gold index).
//
//   arc_easy, arc_challenge  (allenai/ai2_arc)   "Question: {question}\nAnswer:"   choices.text
//   boolq       (super_glue/boolq)  "{passage}\nQuestion: {question}?\nAnswer:"  ["no", "yes"]
//   piqa        (piqa)              "Question: {goal}\nAnswer:"                [sol1, sol2]
//   siqa        (social_i_qa)       "Q: {context} {question}\nA:"               [answerA, answerB,
//   answerC] hellaswag   (hellaswag)         preprocess("{activity_label}: {ctx_a} {Ctx_b}")
//   preprocess(endings) openbookqa  (openbookqa/main)   "{question_stem}" choices.text winogrande
//   (winogrande_xl)     partial scoring: each option fills the blank and forms a
//                                   context; the text after the blank is the scored continuation
//
// Every continuation is " " + choice (lm-eval's target delimiter). acc_norm divides a choice's
// log-likelihood by its length in characters (Unicode code points, as Python's len).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace deepthin::eval {

// One question: one log-likelihood request (context, continuation) per choice.
struct McItem {
  std::vector<std::string> contexts;       // per choice
  std::vector<std::string> continuations;  // per choice, delimiter included
  std::vector<std::string> choices;        // lm-eval's doc_to_choice (acc_norm's lengths)
  int gold = 0;
  int64_t line = 0;  // in the task file
};

struct Task {
  std::string name;
  std::filesystem::path file;
  std::vector<McItem> items;
};

// The task names deepthin knows, in the paper's order.
const std::vector<std::string>& known_tasks();

// Reads DIR/<name>.jsonl (at most `limit` items when > 0). Input errors name the file, the line and
// the field that is missing or malformed; an unknown task lists the known ones.
Task load_task(const std::string& name, const std::filesystem::path& dir, int64_t limit = 0);

// lm-eval's HellaSwag text clean-up: strip, " [title]" → ". ", drop [bracketed] spans, "  " → " ".
std::string hellaswag_preprocess(const std::string& text);

// Code points of a UTF-8 string (Python's len of the decoded string).
int64_t utf8_length(const std::string& s);

}  // namespace deepthin::eval
