// Text helpers the command-line tests share (tests/client/cli_test.cc against a fake server,
// tests/e2e/cli_mlp_test.cc against a real one): picking lines of captured output and counting
// occurrences.
#ifndef DRFM_TESTS_TEXT_UTIL_H_
#define DRFM_TESTS_TEXT_UTIL_H_

#include <cstddef>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace drfm::test {

// The lines of `text` that start with `prefix`.
inline std::vector<std::string> LinesStartingWith(const std::string& text,
                                                  const std::string& prefix) {
  std::vector<std::string> lines;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    if (absl::StartsWith(line, prefix)) lines.emplace_back(line);
  }
  return lines;
}

// How often `needle` occurs in `text` (overlapping occurrences included).
inline size_t Count(const std::string& text, const std::string& needle) {
  size_t n = 0;
  for (size_t at = text.find(needle); at != std::string::npos; at = text.find(needle, at + 1)) ++n;
  return n;
}

}  // namespace drfm::test

#endif  // DRFM_TESTS_TEXT_UTIL_H_
