// Small string helpers shared by config, CLI and data code.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace deepthin {

std::vector<std::string> split(std::string_view s, char sep);
std::string join(const std::vector<std::string>& parts, std::string_view sep);
std::string trim(std::string_view s);
bool starts_with(std::string_view s, std::string_view prefix);

// Strict parses: the whole string must be the number, else nullopt.
std::optional<int64_t> parse_int(std::string_view s);
std::optional<double> parse_double(std::string_view s);

// Levenshtein distance, for "did you mean" suggestions.
size_t edit_distance(std::string_view a, std::string_view b);
// The candidate closest to `word`, if it is close enough to be a plausible typo.
std::optional<std::string> nearest(std::string_view word,
                                   const std::vector<std::string>& candidates);

// Lowercase hex of n bytes (checksums, generator states).
std::string hex_encode(const void* data, size_t n);
// "1,234,567" style grouping for human-readable counts.
std::string group_digits(int64_t n);
// 124.6M, 1.01B, 31.5K.
std::string human_count(double n);

}  // namespace deepthin
