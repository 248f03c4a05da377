// Tensor handles, data in and out, autograd, grad/inference modes and random generators.
#include "common.h"

#include <ATen/CPUGeneratorImpl.h>
#include <c10/core/GradMode.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/version.h>

#include <cstring>
#include <mutex>
#include <sstream>

namespace sdt {

Counters& counters() {
  static Counters c;
  return c;
}

static int64_t reportableBytes(const at::Tensor& t) {
  // Views share their base's storage: report only tensors that own a storage of their own.
  if (!t.defined() || t.is_view() || !t.has_storage()) return 0;
  return static_cast<int64_t>(t.storage().nbytes());
}

static void finalizeHolder(Napi::Env env, TensorHolder* h) {
  if (h->t.defined()) {
    counters().leakedToGc++;
    counters().live--;
  }
  if (h->reported) {
    counters().reportedBytes -= h->reported;
    Napi::MemoryManagement::AdjustExternalMemory(env, -h->reported);
  }
  delete h;
}

Napi::Value wrap(Napi::Env env, at::Tensor t) {
  if (!t.defined()) return env.Null();
  auto* h = new TensorHolder{std::move(t), 0};
  h->reported = reportableBytes(h->t);
  if (h->reported) {
    counters().reportedBytes += h->reported;
    Napi::MemoryManagement::AdjustExternalMemory(env, h->reported);
  }
  counters().live++;
  counters().created++;
  return Napi::External<TensorHolder>::New(env, h, finalizeHolder);
}

bool isTensorHandle(const Napi::Value& v) { return v.IsExternal(); }

at::Tensor& unwrap(const Napi::Value& v, const char* what) {
  if (!v.IsExternal()) {
    throw Napi::TypeError::New(v.Env(), std::string("expected a tensor for ") + what);
  }
  auto* h = v.As<Napi::External<TensorHolder>>().Data();
  if (!h->t.defined()) {
    throw Napi::Error::New(v.Env(), std::string("tensor used after dispose() (") + what +
                                        "): keep it with keep() or return it from the tidy() scope");
  }
  return h->t;
}

void disposeHandle(Napi::Env env, const Napi::Value& v) {
  if (!v.IsExternal()) return;
  auto* h = v.As<Napi::External<TensorHolder>>().Data();
  if (!h->t.defined()) return;  // disposing twice is harmless
  h->t.reset();
  counters().live--;
  if (h->reported) {
    counters().reportedBytes -= h->reported;
    Napi::MemoryManagement::AdjustExternalMemory(env, -h->reported);
    h->reported = 0;
  }
}

[[noreturn]] void rethrow(Napi::Env env, const std::string& context) {
  try {
    throw;
  } catch (const c10::Error& e) {
    std::string msg = e.what_without_backtrace();
    throw Napi::Error::New(env, context.empty() ? msg : context + ": " + msg);
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, context.empty() ? std::string(e.what()) : context + ": " + e.what());
  } catch (...) {
    throw Napi::Error::New(env, context + ": unknown native error");
  }
}

std::string dtypeName(at::ScalarType s) {
  switch (s) {
    case at::kFloat: return "float32";
    case at::kDouble: return "float64";
    case at::kHalf: return "float16";
    case at::kBFloat16: return "bfloat16";
    case at::kLong: return "int64";
    case at::kInt: return "int32";
    case at::kShort: return "int16";
    case at::kChar: return "int8";
    case at::kByte: return "uint8";
    case at::kBool: return "bool";
    default: return c10::toString(s);
  }
}

std::string describe(const at::Tensor& t) {
  if (!t.defined()) return "undefined";
  std::ostringstream os;
  os << "Tensor[";
  auto sz = t.sizes();
  for (size_t i = 0; i < sz.size(); i++) os << (i ? ", " : "") << sz[i];
  os << "] " << dtypeName(t.scalar_type()) << " " << t.device().str();
  return os.str();
}

at::ScalarType dtypeFromCode(Napi::Env env, int64_t code) {
  if (code < 0 || code >= static_cast<int64_t>(at::ScalarType::NumOptions)) {
    throw Napi::RangeError::New(env, "unknown dtype code " + std::to_string(code));
  }
  return static_cast<at::ScalarType>(code);
}

std::vector<int64_t> toShape(const Napi::Value& v) {
  if (!v.IsArray()) throw Napi::TypeError::New(v.Env(), "shape must be an array of integers");
  auto a = v.As<Napi::Array>();
  std::vector<int64_t> out(a.Length());
  for (uint32_t i = 0; i < a.Length(); i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsNumber()) throw Napi::TypeError::New(v.Env(), "shape must be an array of integers");
    double d = e.As<Napi::Number>().DoubleValue();
    if (d < 0 || d != static_cast<double>(static_cast<int64_t>(d))) {
      throw Napi::RangeError::New(v.Env(), "shape entries must be non-negative integers");
    }
    out[i] = static_cast<int64_t>(d);
  }
  return out;
}

// ---- pending unrefs of Buffers wrapped without copy -------------------------------------------

static std::mutex g_unrefMutex;
static std::vector<napi_ref> g_pendingUnrefs;
static std::atomic<bool> g_hasPending{false};

void drainPendingUnrefs(Napi::Env env) {
  if (!g_hasPending.load(std::memory_order_acquire)) return;
  std::vector<napi_ref> drained;
  {
    std::lock_guard<std::mutex> lock(g_unrefMutex);
    drained.swap(g_pendingUnrefs);
    g_hasPending = false;
  }
  for (napi_ref r : drained) napi_delete_reference(env, r);
}

static Napi::Value Dispose(const Napi::CallbackInfo& info) {
  for (size_t i = 0; i < info.Length(); i++) disposeHandle(info.Env(), info[i]);
  return info.Env().Undefined();
}

static Napi::Value IsDisposed(const Napi::CallbackInfo& info) {
  if (!info[0].IsExternal()) return Napi::Boolean::New(info.Env(), true);
  auto* h = info[0].As<Napi::External<TensorHolder>>().Data();
  return Napi::Boolean::New(info.Env(), !h->t.defined());
}

// fromBuffer(buf, dtypeCode, shape, zeroCopy) -> tensor on CPU.
static Napi::Value FromBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  drainPendingUnrefs(env);
  if (!info[0].IsTypedArray() && !info[0].IsBuffer()) throw Napi::TypeError::New(env, "fromBuffer: expected a Buffer or typed array");
  auto ta = info[0].As<Napi::TypedArray>();
  uint8_t* data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  size_t len = ta.ByteLength();
  at::ScalarType dt = dtypeFromCode(env, info[1].As<Napi::Number>().Int64Value());
  std::vector<int64_t> shape = toShape(info[2]);
  bool zeroCopy = info.Length() > 3 && info[3].ToBoolean();
  int64_t numel = 1;
  for (auto s : shape) numel *= s;
  size_t item = c10::elementSize(dt);
  if (static_cast<size_t>(numel) * item != len) {
    throw Napi::RangeError::New(env, "fromBuffer: " + std::to_string(len) + " bytes do not hold " +
                                         std::to_string(numel) + " " + dtypeName(dt) + " values");
  }
  SDT_TRY
  auto opts = at::TensorOptions().dtype(dt);
  if (!zeroCopy || len == 0) {
    at::Tensor t = at::empty(shape, opts);
    if (len) std::memcpy(t.data_ptr(), data, len);
    return wrap(env, std::move(t));
  }
  if (reinterpret_cast<uintptr_t>(data) % item != 0) {
    throw Napi::Error::New(env, "fromBuffer: the buffer is not aligned to " + std::to_string(item) +
                                    " bytes (Node pools small Buffers); copy it instead");
  }
  napi_ref ref;
  napi_create_reference(env, info[0], 1, &ref);
  at::Tensor t = at::from_blob(
      data, shape,
      [ref](void*) {
        std::lock_guard<std::mutex> lock(g_unrefMutex);
        g_pendingUnrefs.push_back(ref);
        g_hasPending = true;
      },
      opts);
  return wrap(env, std::move(t));
  SDT_CATCH(env, "fromBuffer")
}

// toBuffer(t) -> Buffer with the tensor's bytes (contiguous, on the CPU; copies).
static Napi::Value ToBuffer(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor& src = unwrap(info[0]);
  SDT_TRY
  at::Tensor t = src.detach();
  if (!t.device().is_cpu()) t = t.to(at::kCPU);  // waits for the device
  t = t.contiguous();
  size_t n = t.numel() * t.element_size();
  auto buf = Napi::Buffer<uint8_t>::New(env, n);
  if (n) std::memcpy(buf.Data(), t.data_ptr(), n);
  return buf;
  SDT_CATCH(env, "toBuffer")
}

static Napi::Value Shape(const Napi::CallbackInfo& info) {
  at::Tensor& t = unwrap(info[0]);
  auto sz = t.sizes();
  auto a = Napi::Array::New(info.Env(), sz.size());
  for (size_t i = 0; i < sz.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(sz[i])));
  return a;
}

static Napi::Value Strides(const Napi::CallbackInfo& info) {
  at::Tensor& t = unwrap(info[0]);
  auto st = t.strides();
  auto a = Napi::Array::New(info.Env(), st.size());
  for (size_t i = 0; i < st.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(info.Env(), static_cast<double>(st[i])));
  return a;
}

static Napi::Value Dim(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(unwrap(info[0]).dim())); }
static Napi::Value Numel(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<double>(unwrap(info[0]).numel())); }
static Napi::Value DtypeCode(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), static_cast<int>(unwrap(info[0]).scalar_type())); }
static Napi::Value DeviceName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), unwrap(info[0]).device().str()); }
static Napi::Value Describe(const Napi::CallbackInfo& info) {
  if (info[0].IsExternal() && !info[0].As<Napi::External<TensorHolder>>().Data()->t.defined()) {
    return Napi::String::New(info.Env(), "Tensor(disposed)");
  }
  return Napi::String::New(info.Env(), describe(unwrap(info[0])));
}
static Napi::Value IsContiguous(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), unwrap(info[0]).is_contiguous()); }
static Napi::Value SameTensor(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), unwrap(info[0]).unsafeGetTensorImpl() == unwrap(info[1]).unsafeGetTensorImpl());
}

// A new handle on the same tensor (shares the TensorImpl; disposing one leaves the other alive).
static Napi::Value Alias(const Napi::CallbackInfo& info) {
  at::Tensor t = unwrap(info[0]);
  return wrap(info.Env(), t);
}

// ---- autograd ----------------------------------------------------------------------------------

static Napi::Value RequiresGrad(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), unwrap(info[0]).requires_grad()); }

static Napi::Value SetRequiresGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor& t = unwrap(info[0]);
  SDT_TRY
  t.requires_grad_(info[1].ToBoolean());
  return env.Undefined();
  SDT_CATCH(env, "requiresGrad_")
}

static Napi::Value Grad(const Napi::CallbackInfo& info) {
  at::Tensor& t = unwrap(info[0]);
  return wrap(info.Env(), t.grad());
}

static Napi::Value SetGrad(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor& t = unwrap(info[0]);
  SDT_TRY
  if (info[1].IsNull() || info[1].IsUndefined()) {
    t.mutable_grad().reset();
  } else {
    t.mutable_grad() = unwrap(info[1], "grad");
  }
  return env.Undefined();
  SDT_CATCH(env, "setGrad")
}

static Napi::Value IsLeaf(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), unwrap(info[0]).is_leaf()); }

// backward(t, grad|null, retainGraph, createGraph)
static Napi::Value Backward(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  at::Tensor& t = unwrap(info[0]);
  SDT_TRY
  at::Tensor g;
  if (info.Length() > 1 && info[1].IsExternal()) g = unwrap(info[1], "gradient");
  c10::optional<bool> retain;
  if (info.Length() > 2 && info[2].IsBoolean()) retain = info[2].As<Napi::Boolean>().Value();
  bool create = info.Length() > 3 && info[3].ToBoolean();
  t.backward(g, retain, create);
  return env.Undefined();
  SDT_CATCH(env, "backward")
}

static Napi::Value IsGradEnabled(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), c10::GradMode::is_enabled()); }

// setGradEnabled(b) -> previous value; the TS side restores it in a finally block.
static Napi::Value SetGradEnabled(const Napi::CallbackInfo& info) {
  bool prev = c10::GradMode::is_enabled();
  c10::GradMode::set_enabled(info[0].ToBoolean());
  return Napi::Boolean::New(info.Env(), prev);
}

// enterInference() -> guard handle; exitInference(guard). Guards nest like the scopes that own them.
static Napi::Value EnterInference(const Napi::CallbackInfo& info) {
  auto* g = new c10::InferenceMode(true);
  return Napi::External<c10::InferenceMode>::New(info.Env(), g);
}
static Napi::Value ExitInference(const Napi::CallbackInfo& info) {
  delete info[0].As<Napi::External<c10::InferenceMode>>().Data();
  return info.Env().Undefined();
}
static Napi::Value IsInferenceMode(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), c10::InferenceMode::is_enabled()); }
static Napi::Value IsInferenceTensor(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), unwrap(info[0]).is_inference()); }

// ---- random generators -------------------------------------------------------------------------

struct GenHolder {
  at::Generator g;
};

static uint64_t toSeed(const Napi::Value& v) {
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Uint64Value(&lossless);
  }
  double d = v.As<Napi::Number>().DoubleValue();
  if (d < 0) return static_cast<uint64_t>(static_cast<int64_t>(d));
  return static_cast<uint64_t>(d);
}

// manualSeed(seed): seeds the default CPU generator (and CUDA's when present), as torch.manual_seed.
static Napi::Value ManualSeed(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t seed = toSeed(info[0]);
  SDT_TRY
  {
    auto gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_current_seed(seed);
  }
  for (int64_t i = 0; i < cudaDeviceCount(); i++) {
    {
      auto gen = at::globalContext().defaultGenerator(at::Device(at::kCUDA, static_cast<c10::DeviceIndex>(i)));
      std::lock_guard<std::mutex> lock(gen.mutex());
      gen.set_current_seed(seed);
    }
  }
  return env.Undefined();
  SDT_CATCH(env, "manualSeed")
}

// newGenerator(seed, device) -> generator handle (torch.Generator(device).manual_seed(seed)).
static Napi::Value NewGenerator(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  uint64_t seed = toSeed(info[0]);
  std::string dev = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "cpu";
  SDT_TRY
  at::Device device(dev);
  at::Generator g;
  if (device.is_cpu()) {
    g = at::make_generator<at::CPUGeneratorImpl>(seed);
  } else if (device.is_cuda()) {
    // A fresh CUDA generator: the hooks expose only the default ones, so clone it and reseed.
    g = at::globalContext().defaultGenerator(at::Device(at::kCUDA, device.has_index() ? device.index() : 0)).clone();
    g.set_current_seed(seed);
  } else {
    throw std::runtime_error("generators are supported on cpu and cuda, not " + dev);
  }
  auto* h = new GenHolder{g};
  return Napi::External<GenHolder>::New(env, h, [](Napi::Env, GenHolder* p) { delete p; });
  SDT_CATCH(env, "newGenerator")
}

at::Generator* unwrapGenerator(const Napi::Value& v);
at::Generator* unwrapGenerator(const Napi::Value& v) {
  if (!v.IsExternal()) throw Napi::TypeError::New(v.Env(), "expected a generator");
  return &v.As<Napi::External<GenHolder>>().Data()->g;
}

// A generator handle, a device name (that device's default generator: "cuda:1"), or null (CPU's).
static at::Generator defaultOrGiven(const Napi::Value& v) {
  if (v.IsExternal()) return *unwrapGenerator(v);
  if (v.IsString()) {
    at::Device device(v.As<Napi::String>().Utf8Value());
    if (device.is_cuda()) return at::globalContext().defaultGenerator(at::Device(at::kCUDA, device.has_index() ? device.index() : 0));
  }
  return at::detail::getDefaultCPUGenerator();
}

// generatorState(gen|device|null) -> Buffer; setGeneratorState(gen|device|null, Buffer). Exact resume needs both.
static Napi::Value GeneratorState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SDT_TRY
  at::Generator g = defaultOrGiven(info[0]);
  at::Tensor st;
  {
    std::lock_guard<std::mutex> lock(g.mutex());
    st = g.get_state();
  }
  st = st.contiguous();
  auto buf = Napi::Buffer<uint8_t>::New(env, st.numel());
  std::memcpy(buf.Data(), st.data_ptr(), st.numel());
  return buf;
  SDT_CATCH(env, "generatorState")
}

static Napi::Value SetGeneratorState(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SDT_TRY
  at::Generator g = defaultOrGiven(info[0]);
  auto buf = info[1].As<Napi::Buffer<uint8_t>>();
  at::Tensor st = at::empty({static_cast<int64_t>(buf.Length())}, at::TensorOptions().dtype(at::kByte));
  std::memcpy(st.data_ptr(), buf.Data(), buf.Length());
  {
    std::lock_guard<std::mutex> lock(g.mutex());
    g.set_state(st);
  }
  return env.Undefined();
  SDT_CATCH(env, "setGeneratorState")
}

static Napi::Value Stats(const Napi::CallbackInfo& info) {
  auto o = Napi::Object::New(info.Env());
  o.Set("live", Napi::Number::New(info.Env(), static_cast<double>(counters().live.load())));
  o.Set("created", Napi::Number::New(info.Env(), static_cast<double>(counters().created.load())));
  o.Set("leakedToGc", Napi::Number::New(info.Env(), static_cast<double>(counters().leakedToGc.load())));
  o.Set("reportedBytes", Napi::Number::New(info.Env(), static_cast<double>(counters().reportedBytes.load())));
  return o;
}

void initTensor(Napi::Env env, Napi::Object e) {
  e.Set("dispose", Napi::Function::New(env, Dispose));
  e.Set("isDisposed", Napi::Function::New(env, IsDisposed));
  e.Set("fromBuffer", Napi::Function::New(env, FromBuffer));
  e.Set("toBuffer", Napi::Function::New(env, ToBuffer));
  e.Set("shape", Napi::Function::New(env, Shape));
  e.Set("strides", Napi::Function::New(env, Strides));
  e.Set("dim", Napi::Function::New(env, Dim));
  e.Set("numel", Napi::Function::New(env, Numel));
  e.Set("dtype", Napi::Function::New(env, DtypeCode));
  e.Set("device", Napi::Function::New(env, DeviceName));
  e.Set("describe", Napi::Function::New(env, Describe));
  e.Set("isContiguous", Napi::Function::New(env, IsContiguous));
  e.Set("sameTensor", Napi::Function::New(env, SameTensor));
  e.Set("alias", Napi::Function::New(env, Alias));
  e.Set("requiresGrad", Napi::Function::New(env, RequiresGrad));
  e.Set("setRequiresGrad", Napi::Function::New(env, SetRequiresGrad));
  e.Set("grad", Napi::Function::New(env, Grad));
  e.Set("setGrad", Napi::Function::New(env, SetGrad));
  e.Set("isLeaf", Napi::Function::New(env, IsLeaf));
  e.Set("backward", Napi::Function::New(env, Backward));
  e.Set("isGradEnabled", Napi::Function::New(env, IsGradEnabled));
  e.Set("setGradEnabled", Napi::Function::New(env, SetGradEnabled));
  e.Set("enterInference", Napi::Function::New(env, EnterInference));
  e.Set("exitInference", Napi::Function::New(env, ExitInference));
  e.Set("isInferenceMode", Napi::Function::New(env, IsInferenceMode));
  e.Set("isInferenceTensor", Napi::Function::New(env, IsInferenceTensor));
  e.Set("manualSeed", Napi::Function::New(env, ManualSeed));
  e.Set("newGenerator", Napi::Function::New(env, NewGenerator));
  e.Set("generatorState", Napi::Function::New(env, GeneratorState));
  e.Set("setGeneratorState", Napi::Function::New(env, SetGeneratorState));
  e.Set("stats", Napi::Function::New(env, Stats));
  e.Set("torchVersion", Napi::String::New(env, TORCH_VERSION));
}

}  // namespace sdt
