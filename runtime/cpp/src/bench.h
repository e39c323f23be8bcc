// Timed runs of a bundle over several audio lengths, written as report.json (format_version 2, runner "cpp").
#pragma once

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

struct BenchResult {
  double first_run_ms = 0.0;
  std::vector<std::vector<double>> times_ms;  // per length, `runs` timed calls
};

BenchResult run_bench(Model& model, const std::vector<float>& source, const BenchOptions& options, const Bundle& bundle);

// The report as JSON text; `transcript` is the greedy transcript of the source clip.
std::string report_json(const Bundle& bundle, const BenchOptions& options, const BenchResult& result, double load_ms,
                        int64_t peak_rss, int64_t rss_before_load, const std::string& transcript);

}  // namespace allinone
