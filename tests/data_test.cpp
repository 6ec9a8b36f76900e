#include <ATen/ATen.h>
#include <gtest/gtest.h>

#include <sys/stat.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "data/loader.h"
#include "data/prepare.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "test_util.h"
#include "util/error.h"
#include "util/json_io.h"
#include "util/strings.h"

using namespace deepthin;
using namespace deepthin::test;

namespace {

// A small synthetic corpus: JSONL documents of varied words, digits and punctuation.
std::vector<std::string> make_docs(int n, uint32_t seed) {
  static const char* words[] = {"the",       "model", "is",      "deep",   "and",   "thin",
                                "layers",    "share", "weights", "tokens", "flow",  "through",
                                "attention", "heads", "of",      "a",      "phone", "runs",
                                "fast",      "small", "Ünïcode", "naïve",  "42",    "3.14"};
  std::vector<std::string> docs;
  uint32_t x = seed;
  auto rnd = [&] { return x = x * 1664525u + 1013904223u; };
  for (int i = 0; i < n; ++i) {
    std::string d;
    int len = 10 + static_cast<int>(rnd() % 120);
    for (int k = 0; k < len; ++k) {
      d += words[rnd() % (sizeof words / sizeof *words)];
      d += (rnd() % 11 == 0) ? ".\n" : " ";
    }
    docs.push_back(d);
  }
  return docs;
}

fs::path write_jsonl(const fs::path& path, const std::vector<std::string>& docs) {
  std::string text;
  for (const auto& d : docs) {
    Json j = Json::object();
    j["text"] = d;
    j["source"] = "test";
    text += json::dump(j) + "\n";
  }
  return write_text(path, text);
}

class DataTest : public ::testing::Test {
 protected:
  void SetUp() override {
    docs_ = make_docs(400, 7);
    corpus_ = write_jsonl(tmp_ / "corpus.jsonl", docs_);
    data::TokenizerTrainOptions o;
    o.inputs = {corpus_.string()};
    o.vocab_size = 320;
    o.out_dir = tmp_ / "tok";
    tok_path_ = data::train_tokenizer(o);
  }

  data::PrepareOptions prepare_opts(const std::string& out) {
    data::PrepareOptions o;
    o.tokenizer = tok_path_.string();
    o.inputs = {corpus_.string()};
    o.format = data::InputFormat::jsonl;
    o.out = tmp_ / out;
    return o;
  }

  TempDir tmp_;
  std::vector<std::string> docs_;
  fs::path corpus_, tok_path_;
};

}  // namespace

TEST_F(DataTest, TokenizerRoundTripsTextAndHasLlamaSpecials) {
  auto tok = data::Tokenizer::load(tok_path_);
  EXPECT_EQ(tok.vocab_size(), 320);
  EXPECT_EQ(tok.bos_id(), 1);
  EXPECT_EQ(tok.eos_id(), 2);
  EXPECT_EQ(tok.piece(0), "<unk>");
  for (const std::string& s :
       {docs_[0], docs_[1], std::string("the  model\n\nruns 12345 fast"),
        std::string("bytes never seen: \xE2\x82\xAC \xF0\x9F\x98\x80 ~{}")}) {
    auto ids = tok.encode(s);
    EXPECT_FALSE(ids.empty());
    EXPECT_EQ(tok.decode(ids), s);
  }
  // Digits are split one per piece.
  auto ids = tok.encode("12345");
  EXPECT_GE(ids.size(), 5u);
}

// The word-cached encoder used by data prepare gives exactly the plain encoder's ids.
TEST_F(DataTest, CachedEncodingEqualsPlainEncoding) {
  auto tok = data::Tokenizer::load(tok_path_);
  data::Tokenizer::WordCache cache;
  std::vector<std::string> texts = {" leading",
                                    "  two leading",
                                    "trailing ",
                                    "trailing two  ",
                                    "many     spaces   between",
                                    "new\nlines \n\n and\ttabs",
                                    "",
                                    " ",
                                    "   ",
                                    "x",
                                    "\xC3\xBCnic\xC3\xB6"
                                    "de  and 12345 digits"};
  texts.insert(texts.end(), docs_.begin(), docs_.begin() + 50);
  for (const auto& t : texts)
    EXPECT_EQ(tok.encode_cached(t, cache), tok.encode(t)) << "'" << t << "'";
  EXPECT_GT(cache.size(), 10u);
}

TEST_F(DataTest, PreparedCountsEqualEncodedDocumentsAndSplitIsByContent) {
  auto o = prepare_opts("ds");
  o.val_fraction = 0.2;
  o.shard_tokens = 4096;  // several shards
  auto r = data::prepare_dataset(o);
  auto tok = data::Tokenizer::load(tok_path_);
  int64_t expected = 0;
  for (const auto& d : docs_)
    expected += static_cast<int64_t>(tok.encode(d).size()) + 2;  // BOS, EOS
  EXPECT_EQ(r.train_tokens + r.val_tokens, expected);
  EXPECT_EQ(r.train_documents + r.val_documents, 400);
  EXPECT_GT(r.val_documents, 40);
  EXPECT_LT(r.val_documents, 120);
  EXPECT_GT(r.train_shards, 2);

  auto train = data::TokenDataset::open((tmp_ / "ds").string(), "train");
  auto val = data::TokenDataset::open((tmp_ / "ds").string(), "val");
  EXPECT_EQ(train->total_tokens(), r.train_tokens);
  EXPECT_EQ(val->total_tokens(), r.val_tokens);
  // The first train document is framed BOS … EOS and decodes back to its text.
  std::vector<int32_t> first;
  const auto& s0 = *train->shards()[0];
  EXPECT_EQ(s0.at(0), 1u);
  for (int64_t i = 1; s0.at(i) != 2; ++i) first.push_back(static_cast<int32_t>(s0.at(i)));
  auto text = tok.decode(first);
  EXPECT_NE(std::find(docs_.begin(), docs_.end(), text), docs_.end());
}

TEST_F(DataTest, OutputIsByteIdenticalWhateverTheThreadCount) {
  auto a = prepare_opts("a");
  a.threads = 1;
  a.val_fraction = 0.1;
  a.shard_tokens = 5000;
  auto b = prepare_opts("b");
  b.threads = 3;
  b.val_fraction = 0.1;
  b.shard_tokens = 5000;
  auto c = b;  // more workers than cores: documents finish out of order
  c.out = tmp_ / "c";
  c.threads = 8;
  data::prepare_dataset(a);
  data::prepare_dataset(b);
  data::prepare_dataset(c);
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(tmp_ / "a")) names.insert(e.path().filename());
  for (const char* other : {"b", "c"}) {
    std::set<std::string> names_o;
    for (const auto& e : fs::directory_iterator(tmp_ / other)) names_o.insert(e.path().filename());
    EXPECT_EQ(names, names_o);
    for (const auto& n : names)
      EXPECT_EQ(read_text(tmp_ / "a" / n), read_text(tmp_ / other / n)) << other << "/" << n;
  }
}

TEST(Permutation, IsABijectionForAnySize) {
  for (int64_t n : {1, 2, 3, 7, 64, 1000, 4097}) {
    data::Permutation p(n, 42);
    std::vector<int> seen(n, 0);
    for (int64_t i = 0; i < n; ++i) {
      int64_t v = p(i);
      ASSERT_GE(v, 0);
      ASSERT_LT(v, n);
      ++seen[v];
    }
    for (int64_t i = 0; i < n; ++i) EXPECT_EQ(seen[i], 1) << n;
  }
  data::Permutation a(1000, 1), b(1000, 2);
  int same = 0;
  for (int i = 0; i < 1000; ++i) same += a(i) == b(i);
  EXPECT_LT(same, 20);  // seeds give different orders
}

class LoaderWorld : public DataTest, public ::testing::WithParamInterface<int> {};

// Across one epoch every window is served exactly once, whatever the world size.
TEST_P(LoaderWorld, EveryWindowOncePerEpoch) {
  const int world = GetParam();
  auto o = prepare_opts("ds");
  o.shard_tokens = 3000;
  data::prepare_dataset(o);
  auto ds = data::TokenDataset::open((tmp_ / "ds").string(), "train");
  const int64_t B = 3, T = 16;
  std::vector<std::unique_ptr<data::Loader>> ranks;
  for (int r = 0; r < world; ++r)
    ranks.push_back(std::make_unique<data::Loader>(
        ds, data::LoaderOptions{B, T, r, world, /*seed=*/5, true, /*prefetch=*/2}));
  const int64_t W = ranks[0]->num_windows();
  ASSERT_GT(W, 100);
  std::map<int64_t, int> served;
  int64_t pos = 0;  // stream position of the next window
  while (pos < W) {
    for (int r = 0; r < world; ++r) {
      auto b = ranks[r]->next();
      EXPECT_EQ(b.tokens.sizes(), (std::vector<int64_t>{B, T + 1}));
      for (int64_t j = 0; j < B; ++j, ++pos) {
        if (pos >= W) break;  // the rest belongs to the next epoch
        ++served[b.window_ids[j]];
        // The batch holds the window's tokens.
        std::vector<int64_t> want(T + 1);
        ds->read_window(b.window_ids[j], T, want.data());
        EXPECT_TRUE(at::equal(b.tokens[j], at::tensor(want)));
      }
    }
  }
  EXPECT_EQ(static_cast<int64_t>(served.size()), W);
  for (const auto& [w, n] : served) ASSERT_EQ(n, 1) << "window " << w;
}

INSTANTIATE_TEST_SUITE_P(Data, LoaderWorld, ::testing::Values(1, 2, 3));

TEST_F(DataTest, RestoredStateReproducesTheNext100Batches) {
  data::prepare_dataset(prepare_opts("ds"));
  auto ds = data::TokenDataset::open((tmp_ / "ds").string(), "train");
  data::LoaderOptions lo{4, 128, 1, 2, 9, true, 3};
  data::Loader a(ds, lo);
  for (int i = 0; i < 37; ++i) a.next();
  auto saved = data::LoaderState::from_json(json::parse(json::dump(a.state().to_json())), "state");
  std::vector<at::Tensor> expected;
  for (int i = 0; i < 100; ++i) expected.push_back(a.next().tokens);  // crosses an epoch boundary
  EXPECT_GT(a.epoch(), 0);

  data::Loader b(ds, lo);
  b.next();  // some prefetching happened before the restore
  b.set_state(saved);
  for (int i = 0; i < 100; ++i)
    ASSERT_TRUE(at::equal(b.next().tokens, expected[i])) << "batch " << i;
}

TEST_F(DataTest, ValidationReadsInOrder) {
  auto o = prepare_opts("ds");
  o.val_fraction = 0.3;
  data::prepare_dataset(o);
  auto ds = data::TokenDataset::open((tmp_ / "ds").string(), "val");
  data::Loader l(ds, data::LoaderOptions{2, 16, 0, 1, 0, false, 0});
  EXPECT_EQ(l.next().window_ids, (std::vector<int64_t>{0, 1}));
  EXPECT_EQ(l.next().window_ids, (std::vector<int64_t>{2, 3}));
}

TEST_F(DataTest, PreTokenizedJsonlAndLlmcFilesLoad) {
  write_text(tmp_ / "tok.jsonl",
             "{\"token_ids\": [5, 6, 7, 8, 9]}\n{\"token_ids\": [10, 11, 12]}\n");
  auto o = prepare_opts("pre");
  o.tokenizer = "";
  o.vocab_size = 32000;
  o.inputs = {(tmp_ / "tok.jsonl").string()};
  o.format = data::InputFormat::jsonl_tokens;
  auto r = data::prepare_dataset(o);
  EXPECT_EQ(r.train_tokens, 8);  // kept as given: no BOS/EOS framing
  auto ds = data::TokenDataset::open((tmp_ / "pre").string(), "train");
  EXPECT_EQ(ds->shards()[0]->at(5), 10u);
  // Eight distinct ids, each once: the unigram entropy is ln 8.
  EXPECT_NEAR(ds->unigram_entropy(), std::log(8.0), 1e-12);
  auto insp = run_cli("data inspect " + (tmp_ / "pre").string() + " --seq-len 2 --entropy");
  EXPECT_EQ(insp.status, 0) << insp.err;
  EXPECT_NE(insp.out.find("unigram entropy: 2.0794 nats/token"), std::string::npos) << insp.out;
  EXPECT_NE(insp.out.find("8 tokens, 3 windows of 2+1"), std::string::npos) << insp.out;
  write_text(tmp_ / "skew.jsonl", "{\"token_ids\": [5, 5, 6, 7]}\n");
  o.inputs = {(tmp_ / "skew.jsonl").string()};
  o.out = tmp_ / "skew";
  data::prepare_dataset(o);
  EXPECT_NEAR(data::TokenDataset::open((tmp_ / "skew").string(), "train")->unigram_entropy(),
              -(0.5 * std::log(0.5) + 2 * 0.25 * std::log(0.25)), 1e-12);

  // An llm.c / nanoGPT shard: 256 int32 header (magic, version 1, count), then uint16 tokens.
  std::vector<int32_t> header(256, 0);
  header[0] = 20240520;
  header[1] = 1;
  header[2] = 6;
  std::vector<uint16_t> toks = {100, 200, 300, 400, 500, 60000};
  std::ofstream f(tmp_ / "llmc_train_000.bin", std::ios::binary);
  f.write(reinterpret_cast<const char*>(header.data()), 1024);
  f.write(reinterpret_cast<const char*>(toks.data()), 12);
  f.close();
  auto l = data::TokenDataset::open((tmp_ / "llmc_*.bin").string(), "train");
  EXPECT_TRUE(l->shards()[0]->is_llmc());
  EXPECT_EQ(l->total_tokens(), 6);
  EXPECT_EQ(l->shards()[0]->at(5), 60000u);
  std::vector<int64_t> w(3);
  l->read_window(1, 2, w.data());
  EXPECT_EQ(w, (std::vector<int64_t>{300, 400, 500}));
}

// ---- Bad input ----

TEST_F(DataTest, MissingEmptyAndMalformedInputs) {
  auto o = prepare_opts("x");
  o.inputs = {(tmp_ / "nope.jsonl").string()};
  EXPECT_NE(input_error([&] { data::prepare_dataset(o); }).find("input not found"),
            std::string::npos);
  o.inputs = {(tmp_ / "none-*.jsonl").string()};
  EXPECT_NE(input_error([&] { data::prepare_dataset(o); }).find("matches no files"),
            std::string::npos);

  write_text(tmp_ / "empty.jsonl", "\n\n");
  o.inputs = {(tmp_ / "empty.jsonl").string()};
  EXPECT_NE(input_error([&] { data::prepare_dataset(o); }).find("no documents"), std::string::npos);

  write_text(
      tmp_ / "bad.jsonl",
      "{\"text\": \"fine\"}\n{\"text\": \"fine too\"}\n{\"text\": broken\n{\"text\": \"ok\"}\n");
  o.inputs = {(tmp_ / "bad.jsonl").string()};
  auto msg = input_error([&] { data::prepare_dataset(o); });
  EXPECT_NE(msg.find("bad.jsonl:3"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(o.out));
  o.skip_bad_lines = true;
  auto r = data::prepare_dataset(o);
  EXPECT_EQ(r.skipped_lines, 1);
  EXPECT_EQ(r.documents, 3);

  write_text(tmp_ / "nofield.jsonl", "{\"body\": \"x\"}\n");
  auto o2 = prepare_opts("y");
  o2.inputs = {(tmp_ / "nofield.jsonl").string()};
  msg = input_error([&] { data::prepare_dataset(o2); });
  EXPECT_NE(msg.find("nofield.jsonl:1: no \"text\" field (set --text-field)"), std::string::npos)
      << msg;
}

TEST_F(DataTest, TokenIdBeyondVocabulary) {
  write_text(tmp_ / "t.jsonl", "{\"token_ids\": [1, 2]}\n{\"token_ids\": [3, 320]}\n");
  auto o = prepare_opts("x");
  o.inputs = {(tmp_ / "t.jsonl").string()};
  o.format = data::InputFormat::jsonl_tokens;  // checked against the tokenizer's 320 pieces
  auto msg = input_error([&] { data::prepare_dataset(o); });
  EXPECT_NE(msg.find("t.jsonl:2: token id 320 is outside the vocabulary [0, 320)"),
            std::string::npos)
      << msg;
}

TEST_F(DataTest, BadHeaderAndTruncatedShards) {
  data::prepare_dataset(prepare_opts("ds"));
  auto shard = tmp_ / "ds" / "train_000000.bin";
  std::string raw = read_text(shard);
  write_text(tmp_ / "trunc.bin", raw.substr(0, raw.size() - 7));
  auto msg = input_error([&] { data::TokenDataset::open((tmp_ / "trunc.bin").string(), "train"); });
  EXPECT_NE(msg.find("trunc.bin: header promises"), std::string::npos) << msg;
  EXPECT_NE(msg.find("truncated"), std::string::npos) << msg;
  std::string bad = raw;
  bad[0] = 'X';
  write_text(tmp_ / "magic.bin", bad);
  msg = input_error([&] { data::TokenDataset::open((tmp_ / "magic.bin").string(), "train"); });
  EXPECT_NE(msg.find("magic.bin: not a token shard (bad magic"), std::string::npos) << msg;
  bad = raw;
  bad[12] = 3;  // bytes per token
  write_text(tmp_ / "width.bin", bad);
  msg = input_error([&] { data::TokenDataset::open((tmp_ / "width.bin").string(), "train"); });
  EXPECT_NE(msg.find("bad bytes-per-token 3"), std::string::npos) << msg;
  // A prepared directory whose shard was replaced by a shorter one.
  write_text(shard, raw.substr(0, 64));
  bad = raw.substr(0, 64);
  msg = input_error([&] { data::TokenDataset::open((tmp_ / "ds").string(), "train"); });
  EXPECT_NE(msg.find("train_000000.bin"), std::string::npos) << msg;
}

TEST_F(DataTest, TokenizerMismatchIsAnError) {
  data::prepare_dataset(prepare_opts("ds"));
  auto ds = data::TokenDataset::open((tmp_ / "ds").string(), "train");
  auto tok = data::Tokenizer::load(tok_path_);
  ds->check_tokenizer(tok.sha256(), tok_path_.string());  // the same one: fine
  data::TokenizerTrainOptions o;
  o.inputs = {corpus_.string()};
  o.vocab_size = 300;
  o.out_dir = tmp_ / "tok2";
  auto other = data::Tokenizer::load(data::train_tokenizer(o));
  auto msg = input_error([&] { ds->check_tokenizer(other.sha256(), "tok2/tokenizer.model"); });
  EXPECT_NE(msg.find("does not match the dataset"), std::string::npos) << msg;
  msg = input_error([&] { data::Tokenizer::load(corpus_); });
  EXPECT_NE(msg.find("not a SentencePiece model"), std::string::npos) << msg;
}

TEST_F(DataTest, FailureMidPrepareLeavesNothingThatLooksComplete) {
  // Many good documents (several shards get written), then a malformed line at the very end.
  std::string text = read_text(corpus_) + "{\"text\": \n";
  write_text(tmp_ / "late.jsonl", text);
  auto o = prepare_opts("out");
  o.inputs = {(tmp_ / "late.jsonl").string()};
  o.shard_tokens = 2048;
  input_error([&] { data::prepare_dataset(o); });
  EXPECT_FALSE(fs::exists(tmp_ / "out"));
  for (const auto& e : fs::directory_iterator(tmp_.path()))
    EXPECT_EQ(e.path().filename().string().find("out.tmp"), std::string::npos) << e.path();
  // A directory without its manifest (what a killed run would leave) is refused.
  fs::create_directories(tmp_ / "partial");
  write_text(tmp_ / "partial" / "train_000000.bin", "x");
  auto msg = input_error([&] { data::TokenDataset::open((tmp_ / "partial").string(), "train"); });
  EXPECT_NE(msg.find("no manifest.json"), std::string::npos) << msg;
}

TEST_F(DataTest, CliErrorsExitTwo) {
  auto sub = run_cli("data prepar");
  EXPECT_EQ(sub.status, 2);
  EXPECT_NE(sub.err.find("unknown data subcommand 'prepar'; did you mean 'prepare'?"),
            std::string::npos)
      << sub.err;
  auto r = run_cli("data prepare --tokenizer " + tok_path_.string() + " --input " +
                   corpus_.string() + " --format xml --out " + (tmp_ / "o").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(
      r.err.find(
          "unknown input format 'xml'; expected auto | text | jsonl | jsonl-tokens | parquet"),
      std::string::npos)
      << r.err;
  r = run_cli("data prepare --tokenizer " + (tmp_ / "missing.model").string() + " --input " +
              corpus_.string() + " --format jsonl --out " + (tmp_ / "o").string());
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("tokenizer not found"), std::string::npos) << r.err;
  r = run_cli("data prepare --tokenizer " + tok_path_.string() + " --input " + corpus_.string() +
              " --format jsonl --out " + (tmp_ / "o").string());
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_NE(r.err.find("MB/s"), std::string::npos);
  auto enc = run_cli("tokenizer encode --tokenizer " + tok_path_.string() + " --text 'the model'");
  ASSERT_EQ(enc.status, 0);
  auto dec = run_cli("tokenizer decode --tokenizer " + tok_path_.string() + " --ids '" +
                     trim(enc.out) + "'");
  EXPECT_EQ(dec.out, "the model\n");
}

namespace {
int open_fds() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator("/proc/self/fd")) ++n;
  return n;
}
}  // namespace

// Found by fuzzing (fuzz_shards ran out of file descriptors): a rejected shard kept its descriptor
// and mapping. 3,000 rejected opens — more than the usual limit of 1,024 descriptors — leave the
// count where it was. A header whose count, times the token width, wraps around 2^64 is refused,
// and a FIFO or a device named as a shard or a manifest is refused at once instead of blocking or
// being read forever.
TEST(ShardReader, RejectedShardsReleaseEverythingAndSpecialFilesAreRefused) {
  TempDir tmp;
  std::string header(64, '\0');
  std::memcpy(header.data(), data::kShardMagic, 8);
  header[8] = 1;                                // version
  header[12] = 2;                               // bytes per token
  write_text(tmp / "bad.bin", header + "abc");  // promises 0 tokens, holds 3 bytes
  const int before = open_fds();
  for (int i = 0; i < 3000; ++i)
    EXPECT_NE(input_error([&] { data::Shard s(tmp / "bad.bin"); }).find("bad.bin"),
              std::string::npos);
  EXPECT_EQ(open_fds(), before);

  // 2^63 + 2 tokens of 2 bytes wrap to 4 bytes: the file's 4 bytes of tokens must not pass.
  std::string wrap = header;
  wrap[16] = 2;
  wrap[23] = static_cast<char>(0x80);
  write_text(tmp / "wrap.bin", wrap + "abcd");
  auto msg = input_error([&] { data::Shard s(tmp / "wrap.bin"); });
  EXPECT_NE(msg.find("truncated or corrupt"), std::string::npos) << msg;

  ASSERT_EQ(::mkfifo((tmp / "fifo.bin").c_str(), 0600), 0);
  msg = input_error([&] { data::Shard s(tmp / "fifo.bin"); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
  fs::create_directories(tmp / "prepared");
  ASSERT_EQ(::mkfifo((tmp / "prepared" / "manifest.json").c_str(), 0600), 0);
  msg = input_error([&] { data::TokenDataset::open((tmp / "prepared").string(), "train"); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
  fs::create_symlink("/dev/zero", tmp / "zero.bin");
  msg = input_error([&] { data::Shard s(tmp / "zero.bin"); });
  EXPECT_NE(msg.find("not a regular file"), std::string::npos) << msg;
}
