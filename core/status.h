// Error-handling helpers shared by every drfm library: the Status macros that Debian's abseil
// (20220623) lacks, and DRFM_CHECK for programming errors (never for bad user input, which is a
// Status from an options struct's Validate()).
#ifndef DRFM_CORE_STATUS_H_
#define DRFM_CORE_STATUS_H_

#include <cstdio>
#include <cstdlib>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define DRFM_STATUS_CONCAT_INNER_(a, b) a##b
#define DRFM_STATUS_CONCAT_(a, b) DRFM_STATUS_CONCAT_INNER_(a, b)

// Returns from the enclosing function if `expr` (an absl::Status) is not OK.
#define DRFM_RETURN_IF_ERROR(expr)                      \
  do {                                                  \
    ::absl::Status drfm_status_ = (expr);               \
    if (!drfm_status_.ok()) return drfm_status_;        \
  } while (0)

// `lhs = value of rexpr` (an absl::StatusOr<T>), or returns its error status.
#define DRFM_ASSIGN_OR_RETURN(lhs, rexpr) \
  DRFM_ASSIGN_OR_RETURN_IMPL_(DRFM_STATUS_CONCAT_(drfm_statusor_, __LINE__), lhs, rexpr)
#define DRFM_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, rexpr) \
  auto tmp = (rexpr);                                \
  if (!tmp.ok()) return std::move(tmp).status();     \
  lhs = std::move(tmp).value()

// Aborts with a message when a programming invariant is broken.
#define DRFM_CHECK(cond)                                                          \
  do {                                                                            \
    if (!(cond)) {                                                                \
      std::fprintf(stderr, "%s:%d: DRFM_CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      std::abort();                                                               \
    }                                                                             \
  } while (0)

#endif  // DRFM_CORE_STATUS_H_
