// `deepthin report runs/<experiment>`: one row per run in results.csv; one row per point in
// results.md (the seeds of a point averaged, with their spread); PNG plots drawn by matplotlib.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace deepthin::sweep {

struct ReportOptions {
  std::filesystem::path dir;  // runs/<experiment>
  std::string python;         // interpreter with matplotlib; empty: no plots
};

struct ReportResult {
  int runs = 0, points = 0;
  std::string markdown;                      // results.md's text
  std::vector<std::filesystem::path> plots;  // written PNGs
  std::string plot_error;                    // why there are no plots, if there are none
};

ReportResult write_report(const ReportOptions& o);

}  // namespace deepthin::sweep
