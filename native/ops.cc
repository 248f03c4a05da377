// Every ATen op is reached through the dispatcher by schema name ("aten::conv2d", overload ""),
// with arguments converted from JS by the op's own schema. This keeps the binding independent of
// the libtorch version (1.13 on Debian, 2.x in PyTorch installs): an op that exists is callable,
// an op that does not is reported by findOp() returning null, and callers pick a fallback.
// Calls go through the full dispatcher, so autograd, autocast and device dispatch all apply.
#include "common.h"

#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/core/stack.h>

#include <sstream>

namespace sdt {

at::Generator* unwrapGenerator(const Napi::Value& v);

struct OpEntry {
  c10::OperatorHandle op;
  std::string name;  // "aten::add.Tensor", for messages
};

static Napi::Value FindOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string name = info[0].As<Napi::String>().Utf8Value();
  std::string overload = info.Length() > 1 && info[1].IsString() ? info[1].As<Napi::String>().Utf8Value() : "";
  auto h = c10::Dispatcher::singleton().findSchema({name, overload});
  if (!h.has_value()) return env.Null();
  auto* e = new OpEntry{*h, overload.empty() ? name : name + "." + overload};
  return Napi::External<OpEntry>::New(env, e, [](Napi::Env, OpEntry* p) { delete p; });
}

static Napi::Value OpSchema(const Napi::CallbackInfo& info) {
  auto* e = info[0].As<Napi::External<OpEntry>>().Data();
  std::ostringstream os;
  os << e->op.schema();
  return Napi::String::New(info.Env(), os.str());
}

[[noreturn]] static void argError(Napi::Env env, const OpEntry* e, const c10::Argument& a, const std::string& why) {
  throw Napi::TypeError::New(env, e->name + ": argument '" + a.name() + "' (" + a.type()->str() + ") " + why);
}

static int64_t toInt(Napi::Env env, const OpEntry* e, const c10::Argument& a, const Napi::Value& v) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d != static_cast<double>(static_cast<int64_t>(d))) argError(env, e, a, "must be an integer, got " + std::to_string(d));
    return static_cast<int64_t>(d);
  }
  if (v.IsBigInt()) {
    bool lossless;
    return v.As<Napi::BigInt>().Int64Value(&lossless);
  }
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1 : 0;
  argError(env, e, a, "must be an integer");
}

static double toDouble(Napi::Env env, const OpEntry* e, const c10::Argument& a, const Napi::Value& v) {
  if (v.IsNumber()) return v.As<Napi::Number>().DoubleValue();
  if (v.IsBoolean()) return v.As<Napi::Boolean>().Value() ? 1.0 : 0.0;
  argError(env, e, a, "must be a number");
}

// JS numbers become int64 scalars when integral and doubles otherwise, as Python's do.
// {f: x} forces a double (e.g. 1.0 on an integer tensor).
static c10::Scalar toScalar(Napi::Env env, const OpEntry* e, const c10::Argument& a, const Napi::Value& v) {
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && d == static_cast<double>(static_cast<int64_t>(d)) && std::abs(d) < 9.0e15) {
      return c10::Scalar(static_cast<int64_t>(d));
    }
    return c10::Scalar(d);
  }
  if (v.IsBoolean()) return c10::Scalar(v.As<Napi::Boolean>().Value());
  if (v.IsBigInt()) {
    bool lossless;
    return c10::Scalar(static_cast<int64_t>(v.As<Napi::BigInt>().Int64Value(&lossless)));
  }
  if (v.IsObject() && v.As<Napi::Object>().Has("f")) return c10::Scalar(v.As<Napi::Object>().Get("f").As<Napi::Number>().DoubleValue());
  argError(env, e, a, "must be a number or boolean");
}

static c10::IValue toIValue(Napi::Env env, const OpEntry* e, const c10::Argument& a, const c10::TypePtr& type,
                            const Napi::Value& v) {
  using K = c10::TypeKind;
  switch (type->kind()) {
    case K::TensorType:
      if (!v.IsExternal()) argError(env, e, a, "must be a tensor");
      return c10::IValue(unwrap(v, a.name().c_str()));
    case K::OptionalType: {
      if (v.IsNull() || v.IsUndefined()) return c10::IValue();
      return toIValue(env, e, a, type->castRaw<c10::OptionalType>()->getElementType(), v);
    }
    case K::IntType:
      return c10::IValue(toInt(env, e, a, v));
    case K::FloatType:
      return c10::IValue(toDouble(env, e, a, v));
    case K::BoolType:
      if (!v.IsBoolean()) argError(env, e, a, "must be a boolean");
      return c10::IValue(v.As<Napi::Boolean>().Value());
    case K::NumberType:
      return c10::IValue(toScalar(env, e, a, v));
    case K::StringType:
      if (!v.IsString()) argError(env, e, a, "must be a string");
      return c10::IValue(v.As<Napi::String>().Utf8Value());
    case K::DeviceObjType:
      if (!v.IsString()) argError(env, e, a, "must be a device string such as 'cpu' or 'cuda:0'");
      return c10::IValue(c10::Device(v.As<Napi::String>().Utf8Value()));
    case K::GeneratorType:
      return c10::IValue(*unwrapGenerator(v));
    case K::ListType: {
      c10::TypePtr el = type->castRaw<c10::ListType>()->getElementType();
      // Python expands a single int for int[2] (stride=1): do the same.
      if (!v.IsArray()) {
        if ((el->kind() == K::IntType || el->kind() == K::BoolType || el->kind() == K::FloatType) && a.N().has_value()) {
          Napi::Array rep = Napi::Array::New(env, *a.N());
          for (uint32_t i = 0; i < static_cast<uint32_t>(*a.N()); i++) rep.Set(i, v);
          return toIValue(env, e, a, type, rep);
        }
        argError(env, e, a, "must be an array");
      }
      Napi::Array arr = v.As<Napi::Array>();
      uint32_t n = arr.Length();
      switch (el->kind()) {
        case K::IntType: {
          std::vector<int64_t> out(n);
          for (uint32_t i = 0; i < n; i++) out[i] = toInt(env, e, a, arr.Get(i));
          return c10::IValue(out);
        }
        case K::FloatType: {
          std::vector<double> out(n);
          for (uint32_t i = 0; i < n; i++) out[i] = toDouble(env, e, a, arr.Get(i));
          return c10::IValue(out);
        }
        case K::BoolType: {
          c10::List<bool> out;
          for (uint32_t i = 0; i < n; i++) out.push_back(arr.Get(i).ToBoolean().Value());
          return c10::IValue(out);
        }
        case K::TensorType: {
          c10::List<at::Tensor> out;
          out.reserve(n);
          for (uint32_t i = 0; i < n; i++) out.push_back(unwrap(arr.Get(i), a.name().c_str()));
          return c10::IValue(out);
        }
        case K::OptionalType: {
          c10::List<c10::optional<at::Tensor>> out;
          for (uint32_t i = 0; i < n; i++) {
            Napi::Value x = arr.Get(i);
            if (x.IsNull() || x.IsUndefined()) out.push_back(c10::nullopt);
            else out.push_back(unwrap(x, a.name().c_str()));
          }
          return c10::IValue(out);
        }
        default:
          argError(env, e, a, "is a list type the binding does not convert");
      }
    }
    default:
      argError(env, e, a, "has a type the binding does not convert");
  }
}

static Napi::Value fromIValue(Napi::Env env, c10::IValue& v) {
  if (v.isTensor()) return wrap(env, v.toTensor());
  if (v.isNone()) return env.Null();
  if (v.isInt()) return Napi::Number::New(env, static_cast<double>(v.toInt()));
  if (v.isDouble()) return Napi::Number::New(env, v.toDouble());
  if (v.isBool()) return Napi::Boolean::New(env, v.toBool());
  if (v.isTensorList()) {
    auto l = v.toTensorList();
    auto a = Napi::Array::New(env, l.size());
    for (size_t i = 0; i < l.size(); i++) a.Set(static_cast<uint32_t>(i), wrap(env, l.get(i)));
    return a;
  }
  if (v.isTuple()) {
    auto& els = v.toTupleRef().elements();
    auto a = Napi::Array::New(env, els.size());
    for (size_t i = 0; i < els.size(); i++) {
      c10::IValue x = els[i];
      a.Set(static_cast<uint32_t>(i), fromIValue(env, x));
    }
    return a;
  }
  if (v.isIntList()) {
    auto l = v.toIntVector();
    auto a = Napi::Array::New(env, l.size());
    for (size_t i = 0; i < l.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, static_cast<double>(l[i])));
    return a;
  }
  if (v.isDoubleList()) {
    auto l = v.toDoubleVector();
    auto a = Napi::Array::New(env, l.size());
    for (size_t i = 0; i < l.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, l[i]));
    return a;
  }
  if (v.isString()) return Napi::String::New(env, v.toStringRef());
  if (v.isList()) {
    auto l = v.toListRef();
    auto a = Napi::Array::New(env, l.size());
    for (size_t i = 0; i < l.size(); i++) {
      c10::IValue x = l[i];
      a.Set(static_cast<uint32_t>(i), fromIValue(env, x));
    }
    return a;
  }
  if (v.isComplexDouble()) return Napi::Number::New(env, v.toComplexDouble().real());
  throw Napi::Error::New(env, "op returned a value of type " + v.tagKind() + " that the binding does not convert");
}

static std::string describeArgs(const Napi::Array& args) {
  std::ostringstream os;
  os << "(";
  for (uint32_t i = 0; i < args.Length(); i++) {
    Napi::Value v = args.Get(i);
    if (i) os << ", ";
    if (v.IsExternal()) {
      auto* h = v.As<Napi::External<TensorHolder>>().Data();
      os << (h->t.defined() ? describe(h->t) : "Tensor(disposed)");
    } else if (v.IsNumber()) {
      os << v.As<Napi::Number>().DoubleValue();
    } else if (v.IsBoolean()) {
      os << (v.As<Napi::Boolean>().Value() ? "true" : "false");
    } else if (v.IsArray()) {
      os << "[…" << v.As<Napi::Array>().Length() << "]";
    } else if (v.IsNull() || v.IsUndefined()) {
      os << "None";
    } else if (v.IsString()) {
      os << "'" << v.As<Napi::String>().Utf8Value() << "'";
    } else {
      os << "?";
    }
  }
  os << ")";
  return os.str();
}

// callOp(op, args[], mode): mode 0 returns the result (a tensor, or an array for several
// returns), mode 1 discards it (in-place ops whose result is self).
static Napi::Value CallOp(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  drainPendingUnrefs(env);
  auto* e = info[0].As<Napi::External<OpEntry>>().Data();
  Napi::Array args = info[1].As<Napi::Array>();
  int mode = info.Length() > 2 ? info[2].As<Napi::Number>().Int32Value() : 0;
  const auto& schema = e->op.schema();
  const auto& formals = schema.arguments();
  uint32_t given = args.Length();
  if (given > formals.size()) {
    throw Napi::TypeError::New(env, e->name + ": takes " + std::to_string(formals.size()) + " arguments, got " + std::to_string(given));
  }
  torch::jit::Stack stack;
  stack.reserve(formals.size());
  SDT_TRY
  for (size_t i = 0; i < formals.size(); i++) {
    const c10::Argument& a = formals[i];
    Napi::Value v = i < given ? args.Get(static_cast<uint32_t>(i)) : env.Undefined();
    if (v.IsUndefined()) {
      if (a.default_value().has_value()) {
        stack.push_back(*a.default_value());
        continue;
      }
      if (a.type()->kind() == c10::TypeKind::OptionalType) {
        stack.emplace_back();
        continue;
      }
      throw Napi::TypeError::New(env, e->name + ": missing argument '" + a.name() + "'");
    }
    stack.push_back(toIValue(env, e, a, a.type(), v));
  }
  SDT_CATCH(env, e->name + describeArgs(args))
  try {
    e->op.callBoxed(&stack);
  } catch (...) {
    rethrow(env, e->name + describeArgs(args));
  }
  if (mode == 1) return env.Undefined();
  if (stack.size() == 1) return fromIValue(env, stack[0]);
  auto out = Napi::Array::New(env, stack.size());
  for (size_t i = 0; i < stack.size(); i++) out.Set(static_cast<uint32_t>(i), fromIValue(env, stack[i]));
  return out;
}

void initOps(Napi::Env env, Napi::Object e) {
  e.Set("findOp", Napi::Function::New(env, FindOp));
  e.Set("opSchema", Napi::Function::New(env, OpSchema));
  e.Set("callOp", Napi::Function::New(env, CallOp));
}

}  // namespace sdt
