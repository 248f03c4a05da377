// Entry point of the sdtune native addon: one module, three groups of functions.
#include "common.h"

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  sdt::initMemory(env, exports);  // first: sets the thread and malloc policy
  sdt::initTensor(env, exports);
  sdt::initOps(env, exports);
  return exports;
}

NODE_API_MODULE(sdtune_native, Init)
