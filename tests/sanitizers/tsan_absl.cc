// ThreadSanitizer support for Debian's uninstrumented Abseil synchronization (linked into every
// executable of a -DDRFM_SANITIZE=thread build by the top-level CMakeLists.txt; nothing else).
//
// Why: libabsl_synchronization.so from Debian is not built with -fsanitize=thread, so an
// absl::Mutex lock or unlock (an atomic compare-and-swap and a futex syscall inside that library)
// creates no happens-before edge TSan can see. Every access that our code (server/job_manager,
// store, model_registry, metrics, client, tests) guards with an absl::Mutex, absl::CondVar or
// absl::Notification would be reported as a data race, and gRPC's own handoffs (gpr_mu is an
// absl::Mutex) would be invisible too. Abseil built with TSan annotates these itself
// (ABSL_TSAN_MUTEX_*); this file adds the equivalent edges from outside.
//
// How: the executable defines the public entry points of absl::Mutex, CondVar and Notification.
// The dynamic linker binds every caller to them (our code, gRPC's libgpr and Abseil's own internal
// calls through its PLT), and each one calls the real function (dlsym RTLD_NEXT) and tells TSan
// about the synchronization it performs:
//   lock (any flavour, once it is held)  -> __tsan_acquire(mutex)
//   unlock, or a wait that unlocks       -> __tsan_release(mutex) first
//   Notify / a wait that saw the notification -> release / acquire on the Notification
//   every absl::Condition is evaluated between an acquire and a release of its mutex, since Abseil
//   evaluates it with the mutex held, in the waiting thread or in the thread that unlocks.
// This only adds edges the real primitives do create; it cannot invent a race. It is coarser
// than TSan's own mutex model in one direction only: a reader lock is treated like a writer lock
// (readers are ordered among themselves), which could hide a race between two threads that both
// hold a reader lock and one of them writes, never report a false one. Lock-order (deadlock)
// reports for absl::Mutex are not produced (std::mutex keeps them).
#include <dlfcn.h>
#include <sanitizer/tsan_interface.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/base/options.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"

#if !defined(__SANITIZE_THREAD__) && defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define __SANITIZE_THREAD__ 1
#endif
#endif
#ifndef __SANITIZE_THREAD__
#error "tsan_absl.cc is only for -fsanitize=thread builds"
#endif
#if !ABSL_OPTION_USE_INLINE_NAMESPACE
#error "the mangled names below assume Abseil's inline namespace (Debian: absl::debian3)"
#endif

namespace {

#define DRFM_STR2(x) #x
#define DRFM_STR(x) DRFM_STR2(x)

// The mangled name of absl::<inline namespace>::<rest>: "_ZN4absl" + <len><ns> + rest, or with
// "_ZNK" for const member functions.
std::string Mangled(const char* head, const char* rest) {
  const std::string ns = DRFM_STR(ABSL_OPTION_INLINE_NAMESPACE_NAME);
  return std::string(head) + "4absl" + std::to_string(ns.size()) + ns + rest;
}

template <typename Fn>
Fn Real(const char* head, const char* rest) {
  const std::string name = Mangled(head, rest);
  void* f = dlsym(RTLD_NEXT, name.c_str());
  if (f == nullptr) {
    std::fprintf(stderr, "tsan_absl: cannot find %s in the Abseil libraries: %s\n", name.c_str(),
                 dlerror());
    std::abort();
  }
  return reinterpret_cast<Fn>(f);
}

#define DRFM_REAL(type, head, rest) \
  static const auto real = Real<type>(head, rest)

void Acquire(const void* p) { __tsan_acquire(const_cast<void*>(p)); }
void Release(const void* p) { __tsan_release(const_cast<void*>(p)); }

// A Condition that evaluates `cond` with TSan told that `mu` is held.
struct Guarded {
  const absl::Condition* cond;
  const void* mu;
};
bool EvalGuarded(void* arg) {
  auto* g = static_cast<Guarded*>(arg);
  Acquire(g->mu);
  const bool result = g->cond->Eval();
  Release(g->mu);
  return result;
}

}  // namespace

namespace absl {
ABSL_NAMESPACE_BEGIN

using Cond = const Condition&;

void Mutex::Lock() {
  DRFM_REAL(void (*)(Mutex*), "_ZN", "5Mutex4LockEv");
  real(this);
  Acquire(this);
}
void Mutex::ReaderLock() {
  DRFM_REAL(void (*)(Mutex*), "_ZN", "5Mutex10ReaderLockEv");
  real(this);
  Acquire(this);
}
bool Mutex::TryLock() {
  DRFM_REAL(bool (*)(Mutex*), "_ZN", "5Mutex7TryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
bool Mutex::ReaderTryLock() {
  DRFM_REAL(bool (*)(Mutex*), "_ZN", "5Mutex13ReaderTryLockEv");
  const bool locked = real(this);
  if (locked) Acquire(this);
  return locked;
}
void Mutex::Unlock() {
  DRFM_REAL(void (*)(Mutex*), "_ZN", "5Mutex6UnlockEv");
  Release(this);
  real(this);
}
void Mutex::ReaderUnlock() {
  DRFM_REAL(void (*)(Mutex*), "_ZN", "5Mutex12ReaderUnlockEv");
  Release(this);
  real(this);
}

void Mutex::LockWhen(Cond cond) {
  DRFM_REAL(void (*)(Mutex*, Cond), "_ZN", "5Mutex8LockWhenERKNS0_9ConditionE");
  Guarded g{&cond, this};
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
void Mutex::ReaderLockWhen(Cond cond) {
  DRFM_REAL(void (*)(Mutex*, Cond), "_ZN", "5Mutex14ReaderLockWhenERKNS0_9ConditionE");
  Guarded g{&cond, this};
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
bool Mutex::LockWhenWithTimeout(Cond cond, Duration timeout) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Duration), "_ZN",
            "5Mutex19LockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  const bool result = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);  // held on return either way
  return result;
}
bool Mutex::ReaderLockWhenWithTimeout(Cond cond, Duration timeout) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Duration), "_ZN",
            "5Mutex25ReaderLockWhenWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  const bool result = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return result;
}
bool Mutex::LockWhenWithDeadline(Cond cond, Time deadline) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Time), "_ZN",
            "5Mutex20LockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  const bool result = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return result;
}
bool Mutex::ReaderLockWhenWithDeadline(Cond cond, Time deadline) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Time), "_ZN",
            "5Mutex26ReaderLockWhenWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  const bool result = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return result;
}

void Mutex::Await(Cond cond) {
  DRFM_REAL(void (*)(Mutex*, Cond), "_ZN", "5Mutex5AwaitERKNS0_9ConditionE");
  Guarded g{&cond, this};
  Release(this);
  real(this, Condition(&EvalGuarded, &g));
  Acquire(this);
}
bool Mutex::AwaitWithTimeout(Cond cond, Duration timeout) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Duration), "_ZN",
            "5Mutex16AwaitWithTimeoutERKNS0_9ConditionENS0_8DurationE");
  Guarded g{&cond, this};
  Release(this);
  const bool result = real(this, Condition(&EvalGuarded, &g), timeout);
  Acquire(this);
  return result;
}
bool Mutex::AwaitWithDeadline(Cond cond, Time deadline) {
  DRFM_REAL(bool (*)(Mutex*, Cond, Time), "_ZN",
            "5Mutex17AwaitWithDeadlineERKNS0_9ConditionENS0_4TimeE");
  Guarded g{&cond, this};
  Release(this);
  const bool result = real(this, Condition(&EvalGuarded, &g), deadline);
  Acquire(this);
  return result;
}

void CondVar::Wait(Mutex* mu) {
  DRFM_REAL(void (*)(CondVar*, Mutex*), "_ZN", "7CondVar4WaitEPNS0_5MutexE");
  Release(mu);
  real(this, mu);
  Acquire(mu);
}
bool CondVar::WaitWithTimeout(Mutex* mu, Duration timeout) {
  DRFM_REAL(bool (*)(CondVar*, Mutex*, Duration), "_ZN",
            "7CondVar15WaitWithTimeoutEPNS0_5MutexENS0_8DurationE");
  Release(mu);
  const bool result = real(this, mu, timeout);
  Acquire(mu);
  return result;
}
bool CondVar::WaitWithDeadline(Mutex* mu, Time deadline) {
  DRFM_REAL(bool (*)(CondVar*, Mutex*, Time), "_ZN",
            "7CondVar16WaitWithDeadlineEPNS0_5MutexENS0_4TimeE");
  Release(mu);
  const bool result = real(this, mu, deadline);
  Acquire(mu);
  return result;
}

// Notification: the flag is set and read inside the library; a waiter that returns (or sees it
// set) is ordered after Notify. HasBeenNotified() is inline in the header and cannot be wrapped:
// code that polls it instead of waiting gets no edge (none of ours does).
void Notification::Notify() {
  DRFM_REAL(void (*)(Notification*), "_ZN", "12Notification6NotifyEv");
  Release(this);
  real(this);
}
void Notification::WaitForNotification() const {
  DRFM_REAL(void (*)(const Notification*), "_ZNK", "12Notification19WaitForNotificationEv");
  real(this);
  Acquire(this);
}
bool Notification::WaitForNotificationWithTimeout(Duration timeout) const {
  DRFM_REAL(bool (*)(const Notification*, Duration), "_ZNK",
            "12Notification30WaitForNotificationWithTimeoutENS0_8DurationE");
  const bool notified = real(this, timeout);
  if (notified) Acquire(this);
  return notified;
}
bool Notification::WaitForNotificationWithDeadline(Time deadline) const {
  DRFM_REAL(bool (*)(const Notification*, Time), "_ZNK",
            "12Notification31WaitForNotificationWithDeadlineENS0_4TimeE");
  const bool notified = real(this, deadline);
  if (notified) Acquire(this);
  return notified;
}

ABSL_NAMESPACE_END
}  // namespace absl
