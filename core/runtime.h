// Small helpers shared by the long-running loops of the core (the Deep RFM and MLP fits): a
// monotonic clock in seconds and a scoped OpenMP thread count.
#ifndef DRFM_CORE_RUNTIME_H_
#define DRFM_CORE_RUNTIME_H_

#include <omp.h>

#include <chrono>

namespace drfm::core {

// Seconds on the steady clock (only differences are meaningful).
inline double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Sets the calling thread's OpenMP thread count for the lifetime of the object (threads <= 0
// keeps the current one). OpenMP's count is per thread, so concurrent fits on different threads
// do not interfere.
class ScopedThreads {
 public:
  explicit ScopedThreads(int threads) : saved_(omp_get_max_threads()) {
    if (threads > 0) omp_set_num_threads(threads);
  }
  ~ScopedThreads() { omp_set_num_threads(saved_); }
  ScopedThreads(const ScopedThreads&) = delete;
  ScopedThreads& operator=(const ScopedThreads&) = delete;

 private:
  int saved_;
};

}  // namespace drfm::core

#endif  // DRFM_CORE_RUNTIME_H_
