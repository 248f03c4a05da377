// Shared pieces of the sdtune addon: the tensor handle, error translation and dtype names.
//
// A tensor crosses into JavaScript as a Napi::External<TensorHolder>. Its lifetime is explicit:
// JS calls dispose(), which releases the at::Tensor at once. The External's finalizer only frees
// the small holder (and counts a leak if the tensor was never disposed): Node runs finalizers
// from the event loop, so a synchronous training loop must not rely on them
// (see shared/specs/libtorch-notes.md, "Memory").
#pragma once

#include <napi.h>
#include <ATen/ATen.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace sdt {

struct TensorHolder {
  at::Tensor t;
  int64_t reported = 0;  // bytes reported to V8 through AdjustExternalMemory
};

struct Counters {
  std::atomic<int64_t> live{0};        // holders with a defined tensor
  std::atomic<int64_t> created{0};
  std::atomic<int64_t> leakedToGc{0};  // holders finalized by GC before dispose()
  std::atomic<int64_t> reportedBytes{0};
};
Counters& counters();

// Wraps a tensor for JS. An undefined tensor becomes null (e.g. a missing .grad).
Napi::Value wrap(Napi::Env env, at::Tensor t);
// Returns the tensor behind a handle; throws a clear error for disposed or non-tensor values.
at::Tensor& unwrap(const Napi::Value& v, const char* what = "tensor");
bool isTensorHandle(const Napi::Value& v);
void disposeHandle(Napi::Env env, const Napi::Value& v);

// Turns any C++ exception into a JS Error whose message is ATen's own (without the C++ backtrace).
[[noreturn]] void rethrow(Napi::Env env, const std::string& context);

std::string describe(const at::Tensor& t);  // "Tensor[2, 3] float32 cpu"
std::string dtypeName(at::ScalarType s);
at::ScalarType dtypeFromCode(Napi::Env env, int64_t code);
std::vector<int64_t> toShape(const Napi::Value& v);

// Buffers handed to from_blob keep a napi_ref; their deleters can run on any thread, so the
// unref is queued and done on the JS thread at the next call that creates tensors.
void drainPendingUnrefs(Napi::Env env);

// Number of CUDA devices (0 without CUDA); written to compile against 1.13 and 2.x hooks.
int64_t cudaDeviceCount();

void initTensor(Napi::Env env, Napi::Object exports);
void initOps(Napi::Env env, Napi::Object exports);
void initMemory(Napi::Env env, Napi::Object exports);

}  // namespace sdt

// Every exported function body goes through this so that libtorch errors become JS errors.
#define SDT_TRY try {
#define SDT_CATCH(env, ctx)        \
  }                                \
  catch (const Napi::Error&) {     \
    throw;                         \
  }                                \
  catch (...) {                    \
    ::sdt::rethrow((env), (ctx));  \
  }
