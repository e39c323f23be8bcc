// Timed runs of a bundle over several audio lengths, written as report.json (format_version 3, runner "cpp"):
// each timed call is the network (the program's forward) and then, timed apart, the decoding of its log-probs.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "bundle.h"
#include "model.h"

namespace allinone {

struct BenchOptions {
  std::vector<double> lengths_s{1, 5, 10, 20};
  int runs = 10;
  size_t threads = 1;  // the thread pool size in use
  std::string audio;  // source clip, repeated and cut to each length (as the Python bench does)
};

// The decoder the bench times: the bundle's default (greedy, or beam search with its LM).
struct Decoding {
  std::string decoder = "greedy";  // or "ctc_prefix_beam"
  int beam = 0;  // 0 for greedy (written as null)
  int64_t lm_bytes = 0;  // the LM files' bytes; 0 for greedy (written as null)
  std::function<std::string(const LogProbs&)> decode;
};

struct BenchResult {
  double first_run_ms = 0.0;
  std::vector<std::vector<double>> times_ms;  // per length, `runs` timed calls of the network
  std::vector<std::vector<double>> decode_ms;  // per length, the decoding of each of those calls' log-probs
};

BenchResult run_bench(Model& model, const std::vector<float>& source, const BenchOptions& options, const Bundle& bundle,
                      const Decoding& decoding);

// The report as JSON text; `transcript` is the source clip's transcript (by the decoder timed).
std::string report_json(const Bundle& bundle, const BenchOptions& options, const BenchResult& result, double load_ms,
                        int64_t peak_rss, int64_t rss_before_load, const std::string& transcript,
                        const Decoding& decoding);

}  // namespace allinone
