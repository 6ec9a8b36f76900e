// Zero-shot tasks, perplexity and simulated quantization (CPU). The parity of `deepthin eval` with
// lm-evaluation-harness itself is tests/python/test_eval_lm_eval.py.
#include <ATen/ATen.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <filesystem>

#include "config/config.h"
#include "eval/perplexity.h"
#include "eval/score.h"
#include "eval/tasks.h"
#include "model/decoder.h"
#include "model/quant_sim.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json_io.h"

using namespace deepthin;
namespace fs = std::filesystem;

namespace {

config::ModelConfig tiny() {
  config::ModelConfig c;
  c.vocab_size = 61;
  c.dim = 64;
  c.n_layers = 2;
  c.n_heads = 4;
  c.n_kv_heads = 2;
  c.ffn.hidden_dim = 96;
  c.max_seq_len = 32;
  c.init.std = 0.2;
  c.finalize();
  return c;
}

}  // namespace

// Each task's prompt, continuations and gold index, as lm-eval builds them from the published
// fields.
TEST(Tasks, PromptsFollowLmEval) {
  test::TempDir tmp;
  test::write_text(
      tmp / "arc_easy.jsonl",
      R"({"id":"1","question":"Which is hot?","choices":{"text":["ice","fire"],"label":["A","B"]},"answerKey":"B"})"
      "\n");
  test::write_text(tmp / "boolq.jsonl",
                   R"({"question":"is it","passage":"P.","idx":0,"label":true})"
                   "\n");
  test::write_text(tmp / "piqa.jsonl", R"({"goal":"g","sol1":"a","sol2":"b","label":0})"
                                       "\n");
  test::write_text(
      tmp / "siqa.jsonl",
      R"({"context":"C.","question":"Q?","answerA":"x","answerB":"y","answerC":"z","label":"3"})"
      "\n");
  test::write_text(
      tmp / "hellaswag.jsonl",
      R"({"activity_label":"Cooking","ctx_a":"A man  cuts","ctx_b":"THE onion","endings":[" slowly [title] Step one ","fast [header] x"],"label":"1"})"
      "\n");
  test::write_text(
      tmp / "openbookqa.jsonl",
      R"({"id":"o","question_stem":"Stem","choices":{"text":["p","q"],"label":["A","B"]},"answerKey":" A"})"
      "\n");
  test::write_text(
      tmp / "winogrande.jsonl",
      R"({"sentence":"Tom gave Ann the _ because she  asked. ","option1":"book","option2":"cat","answer":"2"})"
      "\n");
  auto arc = eval::load_task("arc_easy", tmp.path());
  EXPECT_EQ(arc.items[0].contexts[0], "Question: Which is hot?\nAnswer:");
  EXPECT_EQ(arc.items[0].continuations[1], " fire");
  EXPECT_EQ(arc.items[0].gold, 1);
  auto boolq = eval::load_task("boolq", tmp.path());
  EXPECT_EQ(boolq.items[0].contexts[0], "P.\nQuestion: is it?\nAnswer:");
  EXPECT_EQ(boolq.items[0].continuations, (std::vector<std::string>{" no", " yes"}));
  EXPECT_EQ(boolq.items[0].gold, 1);
  auto siqa = eval::load_task("siqa", tmp.path());
  EXPECT_EQ(siqa.items[0].contexts[0], "Q: C. Q?\nA:");
  EXPECT_EQ(siqa.items[0].gold, 2);
  auto hs = eval::load_task("hellaswag", tmp.path());
  // ctx_b capitalised (first letter up, the rest down), spaces collapsed, [title] → ". ".
  EXPECT_EQ(hs.items[0].contexts[0], "Cooking: A man cuts The onion");
  EXPECT_EQ(hs.items[0].choices[0], "slowly. Step one");
  EXPECT_EQ(hs.items[0].choices[1], "fast x");
  auto obqa = eval::load_task("openbookqa", tmp.path());
  EXPECT_EQ(obqa.items[0].contexts[0], "Stem");
  EXPECT_EQ(obqa.items[0].gold, 0);  // the answer key's leading space is stripped
  auto wg = eval::load_task("winogrande", tmp.path());
  EXPECT_EQ(wg.items[0].contexts,
            (std::vector<std::string>{"Tom gave Ann the book", "Tom gave Ann the cat"}));
  EXPECT_EQ(wg.items[0].continuations[0], " because she  asked.");
  EXPECT_EQ(wg.items[0].choices[1], "Tom gave Ann the cat");  // acc_norm divides by these
  EXPECT_EQ(wg.items[0].gold, 1);
  EXPECT_EQ(eval::utf8_length("ünï"), 3);
}

// Bad task files name the file, the line and the field.
TEST(Tasks, BadFilesAreClearErrors) {
  test::TempDir tmp;
  EXPECT_NE(
      test::input_error([&] { eval::load_task("mmlu", tmp.path()); }).find("known tasks: arc_easy"),
      std::string::npos);
  EXPECT_NE(test::input_error([&] {
              eval::load_task("piqa", tmp.path());
            }).find("piqa.jsonl does not exist"),
            std::string::npos);
  test::write_text(tmp / "piqa.jsonl", R"({"goal":"g","sol1":"a","sol2":"b","label":0})"
                                       "\n{broken\n");
  EXPECT_NE(test::input_error([&] { eval::load_task("piqa", tmp.path()); }).find("piqa.jsonl:2"),
            std::string::npos);
  test::write_text(tmp / "piqa.jsonl", R"({"goal":"g","sol2":"b","label":0})"
                                       "\n");
  auto e = test::input_error([&] { eval::load_task("piqa", tmp.path()); });
  EXPECT_NE(e.find("piqa.jsonl:1: missing field 'sol1'"), std::string::npos) << e;
  test::write_text(tmp / "piqa.jsonl", R"({"goal":"g","sol1":"a","sol2":"b","label":5})"
                                       "\n");
  e = test::input_error([&] { eval::load_task("piqa", tmp.path()); });
  EXPECT_NE(e.find("answer 5 of 2 choices"), std::string::npos) << e;
  test::write_text(tmp / "winogrande.jsonl",
                   R"({"sentence":"no blank","option1":"a","option2":"b","answer":"1"})"
                   "\n");
  e = test::input_error([&] { eval::load_task("winogrande", tmp.path()); });
  EXPECT_NE(e.find("winogrande.jsonl:1: field 'sentence' has no '_'"), std::string::npos) << e;
}

// Sliding-window perplexity: with a window as long as the stream it is the whole-sequence NLL; with
// shorter windows and a stride every token after the first is still scored once.
TEST(Perplexity, SlidingWindowsScoreEveryTokenOnce) {
  model::Decoder m(tiny());
  m->reset_parameters(5);
  m->eval();
  auto gen = at::make_generator<at::CPUGeneratorImpl>(2);
  auto t = at::randint(61, {32}, gen, at::kLong);
  std::vector<int64_t> tokens(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + 32);
  auto whole = eval::score_sequence(m, tokens, train::Precision::fp32);
  eval::PerplexityOptions o;
  auto r = eval::sliding_perplexity(m, tokens, o);  // window 32 = the stream
  EXPECT_EQ(r.tokens, 31);
  EXPECT_EQ(r.windows, 1);
  EXPECT_NEAR(r.nll, -whole.sum / 31, 1e-6);  // fp32: the same numbers up to summation order
  o.window = 12;
  o.stride = 5;
  auto s = eval::sliding_perplexity(m, tokens, o);
  EXPECT_EQ(s.tokens, 31);
  EXPECT_EQ(s.windows, 5);  // windows start at 0, 5, 10, 15, 20 (the last reaches the end)
  // The same windows scored one by one: each contributes the predictions no earlier one made.
  double expected = 0;
  int64_t scored_to = 0;
  for (int64_t b = 0; scored_to < 31; b += 5) {
    const int64_t e = std::min<int64_t>(b + 12, 32);
    auto w = eval::score_sequence(m, std::vector<int64_t>(tokens.begin() + b, tokens.begin() + e),
                                  train::Precision::fp32);
    for (int64_t p = scored_to - b; p < e - b - 1; ++p) expected -= w.logprobs[p];
    scored_to = e - 1;
  }
  EXPECT_NEAR(s.nll * 31, expected, 1e-4);
  EXPECT_NE(s.nll, r.nll);  // less left context than the single window
  o.stride = 40;
  EXPECT_NE(test::input_error([&] { eval::sliding_perplexity(m, tokens, o); }).find("--stride"),
            std::string::npos);
}

// The quantize-dequantize images: int8 per channel and per token, int4 per group of 32.
TEST(QuantSim, QuantizersKeepTheirGridAndError) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(7);
  auto w = at::randn({6, 64}, gen);
  auto q8 = model::fake_quant_per_channel(w, 8);
  auto scale = w.abs().amax(1, true) / 127;
  auto steps = q8 / scale;
  EXPECT_LT((steps - steps.round()).abs().max().item<double>(), 1e-4);   // on the int8 grid
  EXPECT_LE(((q8 - w).abs() / scale).max().item<double>(), 0.5 + 1e-5);  // within half a step
  auto q4 = model::fake_quant_grouped(w, 4, 32);
  auto g = w.reshape({6, 2, 32});
  auto s4 = (g.abs().amax(2, true) / 7);
  auto k = q4.reshape({6, 2, 32}) / s4;
  EXPECT_LT((k - k.round()).abs().max().item<double>(), 1e-4);
  EXPECT_LE(k.max().item<double>(), 7 + 1e-4);
  EXPECT_GE(k.min().item<double>(), -8 - 1e-4);
  auto x = at::randn({3, 5, 64}, gen);
  auto qa = model::fake_quant_per_token(x, 8);
  auto sa = x.abs().amax(-1, true) / 127;
  EXPECT_LE(((qa - x).abs() / sa).max().item<double>(), 0.5 + 1e-5);
  // Applied to a model: block linears change, embedding / norms / head do not; w8a8 also switches
  // the activation quantizer on, and none switches it off again.
  model::Decoder m(tiny());
  m->reset_parameters(1);
  auto before = m->named_parameters()["model.layers.0.mlp.up_proj.weight"].clone();
  auto emb = m->embed_tokens->weight.clone();
  model::apply_quant_sim(m, model::QuantSim::w8a8);
  EXPECT_FALSE(at::equal(before, m->named_parameters()["model.layers.0.mlp.up_proj.weight"]));
  EXPECT_TRUE(at::equal(emb, m->embed_tokens->weight));
  EXPECT_FALSE(at::equal(model::quantize_activations(x), x));
  model::apply_quant_sim(m, model::QuantSim::none);
  EXPECT_TRUE(at::equal(model::quantize_activations(x), x));
  EXPECT_NE(test::input_error([] { model::parse_quant_sim("int3"); }).find("w4a16-g32"),
            std::string::npos);
}

// deepthin eval's bad input: exit 2, naming the file and line; --truncate-left cuts instead.
TEST(EvalCli, BadInputAndLongContexts) {
  test::TempDir tmp;
  auto text = test::write_text(tmp / "text.txt", test::read_text(test::source_dir() / "README.md"));
  ASSERT_EQ(test::run_cli("tokenizer train --input " + text.string() + " --vocab-size 512 --out " +
                          (tmp / "tok").string())
                .status,
            0);
  auto cfg =
      test::write_text(tmp / "m.yaml",
                       "model: {vocab_size: 512, dim: 32, n_layers: 1, n_heads: 2, n_kv_heads: 1, "
                       "ffn: {hidden_dim: 64}, max_seq_len: 32}\n");
  ASSERT_EQ(test::run_cli("init " + cfg.string() + " --out " + (tmp / "m").string()).status, 0);
  fs::copy_file(tmp / "tok" / "tokenizer.model", tmp / "m" / "tokenizer.model");
  fs::create_directories(tmp / "data");
  test::write_text(tmp / "data" / "boolq.jsonl",
                   R"({"question":"is it short","passage":"Short.","label":1})"
                   "\n"
                   R"({"question":"is it long","passage":")" +
                       std::string(400, 'a') +
                       R"(","label":0})"
                       "\n");
  const std::string base =
      "eval " + (tmp / "m").string() + " --device cpu --data " + (tmp / "data").string();
  auto r = test::run_cli(base + " --tasks boolq");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("boolq.jsonl:2: a request of"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("--truncate-left"), std::string::npos) << r.err;
  r = test::run_cli(base + " --tasks boolq --truncate-left --json " + (tmp / "out.json").string());
  EXPECT_EQ(r.status, 0) << r.err;
  auto j = json::parse(test::read_text(tmp / "out.json"));
  EXPECT_EQ(json::as_int(json::at(json::at(json::at(j, "tasks", "t"), "boolq", "t"), "n", "t")), 2);
  r = test::run_cli(base + " --tasks boolq,mmlu");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("unknown task 'mmlu'"), std::string::npos) << r.err;
  r = test::run_cli("eval " + (tmp / "m").string() + " --tasks boolq");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("--data DIR"), std::string::npos) << r.err;
  r = test::run_cli(base + " --tasks piqa");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("piqa.jsonl does not exist"), std::string::npos) << r.err;
}
