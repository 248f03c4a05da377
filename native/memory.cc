// Process-level policy (threads, malloc, BLAS check), memory-mapped files and devices/autocast.
#include "common.h"

#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <torch/version.h>

#include <dlfcn.h>
#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

namespace sdt {

// The CUDA hooks renamed getNumGPUs() to deviceCount() in 2.x: pick whichever exists.
template <typename H>
static auto numGpus(const H& h, int) -> decltype(h.deviceCount(), int64_t()) {
  return static_cast<int64_t>(h.deviceCount());
}
template <typename H>
static auto numGpus(const H& h, long) -> decltype(h.getNumGPUs(), int64_t()) {
  return static_cast<int64_t>(h.getNumGPUs());
}
int64_t cudaDeviceCount() {
  if (!at::hasCUDA()) return 0;
  return numGpus(at::detail::getCUDAHooks(), 0);
}

// ---- thread policy and BLAS -------------------------------------------------------------------

using SetThreadsFn = void (*)(int);
using GetThreadsFn = int (*)();

static int blasThreads() {
  auto get = reinterpret_cast<GetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_get_num_threads"));
  return get ? get() : -1;
}

static bool setBlasThreads(int n) {
  auto set = reinterpret_cast<SetThreadsFn>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"));
  if (set) set(n);
  return set != nullptr;
}

static int envInt(const char* name, int fallback) {
  const char* v = std::getenv(name);
  if (!v || !*v) return fallback;
  int n = std::atoi(v);
  return n > 0 ? n : fallback;
}

// Called once at load. intra-op threads = cores (libtorch's default here is 1); OpenBLAS gets
// one thread because ATen calls it from inside its own parallel regions' callers and two pools
// of spinning threads on two cores slow both down (libtorch-notes.md, "Threads").
// SDTUNE_NUM_THREADS and SDTUNE_BLAS_THREADS override.
static void applyProcessPolicy() {
  // glibc raises its mmap threshold after the first large free, after which big temporaries stay
  // resident; pinning the threshold keeps RSS flat across training steps.
  mallopt(M_MMAP_THRESHOLD, 1 << 20);
  int cores = static_cast<int>(std::thread::hardware_concurrency());
  if (cores <= 0) cores = 1;
  at::set_num_threads(envInt("SDTUNE_NUM_THREADS", cores));
  setBlasThreads(envInt("SDTUNE_BLAS_THREADS", 1));
}

static Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  int n = info[0].As<Napi::Number>().Int32Value();
  if (n < 1) throw Napi::RangeError::New(info.Env(), "setNumThreads: need at least 1 thread");
  at::set_num_threads(n);
  return info.Env().Undefined();
}

static Napi::Value SetBlasThreads(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), setBlasThreads(info[0].As<Napi::Number>().Int32Value()));
}

static Napi::Value Runtime(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto o = Napi::Object::New(env);
  o.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
  o.Set("numThreads", Napi::Number::New(env, at::get_num_threads()));
  o.Set("blasThreads", Napi::Number::New(env, blasThreads()));
  // Which library provides sgemm_: the path tells OpenBLAS/MKL from the slow reference BLAS.
  std::string blas = "unknown";
  void* sym = dlsym(RTLD_DEFAULT, "sgemm_");
  Dl_info dl;
  if (sym && dladdr(sym, &dl) && dl.dli_fname) {
    char resolved[PATH_MAX];
    blas = realpath(dl.dli_fname, resolved) ? std::string(resolved) : std::string(dl.dli_fname);
  } else if (dlsym(RTLD_DEFAULT, "mkl_get_max_threads")) {
    blas = "mkl";
  }
  o.Set("blas", Napi::String::New(env, blas));
  o.Set("cuda", Napi::Boolean::New(env, at::hasCUDA()));
  o.Set("cudaDevices", Napi::Number::New(env, static_cast<double>(cudaDeviceCount())));
  o.Set("mps", Napi::Boolean::New(env, at::hasMPS()));
  o.Set("parallelInfo", Napi::String::New(env, at::get_parallel_info()));
  return o;
}

// setAllowTF32(cudnn, cublas): TF32 on Ampere+ GPUs. PyTorch's defaults are cuDNN on, cuBLAS off;
// tests turn both off to compare against fp32 references.
static Napi::Value SetAllowTF32(const Napi::CallbackInfo& info) {
  at::globalContext().setAllowTF32CuDNN(info[0].ToBoolean());
  at::globalContext().setAllowTF32CuBLAS(info[1].ToBoolean());
  return info.Env().Undefined();
}

// cudaSynchronize(): waits for all queued GPU work (for timings); a no-op without CUDA.
static Napi::Value CudaSynchronize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SDT_TRY
  if (at::hasCUDA()) {
    // A 1-element device→host copy on the current stream waits for the work queued before it.
    at::Tensor t = at::zeros({1}, at::TensorOptions().device(at::kCUDA));
    (void)t.sum().item<float>();
  }
  return env.Undefined();
  SDT_CATCH(env, "cudaSynchronize")
}

// ---- autocast (mixed precision) ---------------------------------------------------------------
// 2.4+ has the device-generic API; 1.13 and early 2.x only the CUDA-specific setters.
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
#define SDT_AUTOCAST_GENERIC 1
#endif

// setAutocast(enabled, dtypeCode) -> previous {enabled, dtype}; CUDA only (CPU runs fp32).
static Napi::Value SetAutocast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  bool enabled = info[0].ToBoolean();
  at::ScalarType dt = dtypeFromCode(env, info[1].As<Napi::Number>().Int64Value());
  auto prev = Napi::Object::New(env);
#ifdef SDT_AUTOCAST_GENERIC
  prev.Set("enabled", Napi::Boolean::New(env, at::autocast::is_autocast_enabled(at::kCUDA)));
  prev.Set("dtype", Napi::Number::New(env, static_cast<int>(at::autocast::get_autocast_dtype(at::kCUDA))));
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dt);
#else
  prev.Set("enabled", Napi::Boolean::New(env, at::autocast::is_enabled()));
  prev.Set("dtype", Napi::Number::New(env, static_cast<int>(at::autocast::get_autocast_gpu_dtype())));
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dt);
#endif
  if (enabled) {
    at::autocast::increment_nesting();
  } else if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  return prev;
}

static Napi::Value AutocastExit(const Napi::CallbackInfo& info) {
  // Restores a previous state returned by setAutocast, clearing the cast cache at the outermost exit.
  Napi::Env env = info.Env();
  bool enabled = info[0].ToBoolean();
  at::ScalarType dt = dtypeFromCode(env, info[1].As<Napi::Number>().Int64Value());
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
#ifdef SDT_AUTOCAST_GENERIC
  at::autocast::set_autocast_enabled(at::kCUDA, enabled);
  at::autocast::set_autocast_dtype(at::kCUDA, dt);
#else
  at::autocast::set_enabled(enabled);
  at::autocast::set_autocast_gpu_dtype(dt);
#endif
  return env.Undefined();
}

// ---- memory-mapped files ----------------------------------------------------------------------

struct Mapping {
  void* addr = nullptr;
  size_t len = 0;
  std::string path;
  ~Mapping() {
    if (addr && len) munmap(addr, len);
  }
};
struct MappingHolder {
  std::shared_ptr<Mapping> m;
};

// mmapOpen(path) -> mapping. Private, copy-on-write: a tensor over it may be modified in place
// without touching the file. Works for files over 4 GiB (Node Buffers stop there).
static Napi::Value MmapOpen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string path = info[0].As<Napi::String>().Utf8Value();
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Napi::Error::New(env, "cannot open " + path + ": " + std::strerror(errno));
  struct stat st;
  if (fstat(fd, &st) != 0) {
    int err = errno;
    close(fd);
    throw Napi::Error::New(env, "cannot stat " + path + ": " + std::strerror(err));
  }
  auto m = std::make_shared<Mapping>();
  m->path = path;
  m->len = static_cast<size_t>(st.st_size);
  if (m->len > 0) {
    void* p = mmap(nullptr, m->len, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      int err = errno;
      close(fd);
      m->len = 0;
      throw Napi::Error::New(env, "cannot memory-map " + path + ": " + std::strerror(err));
    }
    m->addr = p;
  }
  close(fd);
  auto* h = new MappingHolder{m};
  return Napi::External<MappingHolder>::New(env, h, [](Napi::Env, MappingHolder* p) { delete p; });
}

static std::shared_ptr<Mapping>& unwrapMapping(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a mapping");
  auto* h = v.As<Napi::External<MappingHolder>>().Data();
  if (!h->m) throw Napi::Error::New(v.Env(), "mapping used after close()");
  return h->m;
}

static uint64_t toU64(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0) throw Napi::RangeError::New(v.Env(), "offsets and lengths must be non-negative");
  return static_cast<uint64_t>(d);
}

static Napi::Value MmapSize(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), static_cast<double>(unwrapMapping(info[0])->len));
}

// mmapRead(map, offset, length) -> Buffer (a copy; for headers and small records).
static Napi::Value MmapRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = unwrapMapping(info[0]);
  uint64_t off = toU64(info[1]), len = toU64(info[2]);
  if (off > m->len || len > m->len - off) {
    throw Napi::RangeError::New(env, m->path + ": read of " + std::to_string(len) + " bytes at " + std::to_string(off) +
                                         " is past the end of the file (" + std::to_string(m->len) + " bytes)");
  }
  auto buf = Napi::Buffer<uint8_t>::New(env, len);
  if (len) std::memcpy(buf.Data(), static_cast<uint8_t*>(m->addr) + off, len);
  return buf;
}

// mmapTensor(map, offset, dtypeCode, shape) -> CPU tensor over the mapping (zero copy).
static Napi::Value MmapTensor(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  auto& m = unwrapMapping(info[0]);
  uint64_t off = toU64(info[1]);
  at::ScalarType dt = dtypeFromCode(env, info[2].As<Napi::Number>().Int64Value());
  std::vector<int64_t> shape = toShape(info[3]);
  uint64_t numel = 1;
  for (auto s : shape) numel *= static_cast<uint64_t>(s);
  uint64_t bytes = numel * c10::elementSize(dt);
  if (off > m->len || bytes > m->len - off) {
    throw Napi::RangeError::New(env, m->path + ": tensor of " + std::to_string(bytes) + " bytes at offset " + std::to_string(off) +
                                         " runs past the end of the file (" + std::to_string(m->len) + " bytes)");
  }
  SDT_TRY
  auto opts = at::TensorOptions().dtype(dt);
  if (bytes == 0) return wrap(env, at::empty(shape, opts));
  uint8_t* p = static_cast<uint8_t*>(m->addr) + off;
  if (reinterpret_cast<uintptr_t>(p) % c10::elementSize(dt) != 0) {
    // Misaligned data (legal in some files): copy instead of viewing.
    at::Tensor t = at::empty(shape, opts);
    std::memcpy(t.data_ptr(), p, bytes);
    return wrap(env, std::move(t));
  }
  auto* keep = new std::shared_ptr<Mapping>(m);
  at::Tensor t = at::from_blob(p, shape, [keep](void*) { delete keep; }, opts);
  return wrap(env, std::move(t));
  SDT_CATCH(env, "mmapTensor")
}

static Napi::Value MmapClose(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal()) info[0].As<Napi::External<MappingHolder>>().Data()->m.reset();
  return info.Env().Undefined();
}

void initMemory(Napi::Env env, Napi::Object e) {
  applyProcessPolicy();
  e.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  e.Set("setBlasThreads", Napi::Function::New(env, SetBlasThreads));
  e.Set("runtime", Napi::Function::New(env, Runtime));
  e.Set("setAllowTF32", Napi::Function::New(env, SetAllowTF32));
  e.Set("cudaSynchronize", Napi::Function::New(env, CudaSynchronize));
  e.Set("setAutocast", Napi::Function::New(env, SetAutocast));
  e.Set("autocastExit", Napi::Function::New(env, AutocastExit));
  e.Set("mmapOpen", Napi::Function::New(env, MmapOpen));
  e.Set("mmapSize", Napi::Function::New(env, MmapSize));
  e.Set("mmapRead", Napi::Function::New(env, MmapRead));
  e.Set("mmapTensor", Napi::Function::New(env, MmapTensor));
  e.Set("mmapClose", Napi::Function::New(env, MmapClose));
}

}  // namespace sdt
