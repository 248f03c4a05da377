# Records PyTorch reference values for test/torch/*.test.ts.
# Run with Debian's python3-torch (the same libtorch the tests use):
#   /usr/bin/python3 test/data/torch/make.py
# Writes reference.json beside this file. The tests read the JSON only (no Python in CI).
import json, math, os
import torch
import torch.nn.functional as F

torch.set_num_threads(1)
out = {"torch_version": torch.__version__}

def lst(t):
    return t.detach().double().flatten().tolist()

# 1. randn/rand/randint parity for several seeds and shapes (default generator and explicit ones).
rng = []
for seed, shape in [(0, [5]), (42, [2, 3]), (1234, [4, 4, 8]), (7, [1, 4, 8, 8]), (2**32 + 5, [17]), (99, [3, 1000])]:
    torch.manual_seed(seed)
    a = torch.randn(shape)
    g = torch.Generator().manual_seed(seed)
    b = torch.randn(shape, generator=g)
    c = torch.rand(shape, generator=g)
    d = torch.randint(0, 1000, shape, generator=g)
    rng.append({"seed": seed, "shape": shape,
                "randn_head": lst(a)[:16], "randn_sum": float(a.double().sum()),
                "randn_bits_sum": int(a.view(torch.int32).long().sum()),
                "gen_equal": bool(torch.equal(a, b)),
                "rand_head": lst(c)[:8], "rand_sum": float(c.double().sum()),
                "randint_head": d.flatten().tolist()[:8], "randint_sum": int(d.sum())})
out["rng"] = rng

# 2. ops with gradients: loss = sum(out * w) for a fixed random w; inputs recorded.
g = torch.Generator().manual_seed(2024)
def R(*s):
    return torch.randn(*s, generator=g)

cases = {}
def case(name, fn, inputs, **extra):
    ins = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in inputs.items()}
    y = fn(**ins)
    w = R(*y.shape)
    (y * w).sum().backward()
    cases[name] = {"inputs": {k: {"shape": list(v.shape), "values": lst(v)} for k, v in inputs.items()},
                   "w": lst(w), "out_shape": list(y.shape), "out": lst(y),
                   "grads": {k: lst(v.grad) for k, v in ins.items() if v.grad is not None}, **extra}

case("linear", lambda x, W, b: F.linear(x, W, b), {"x": R(3, 5), "W": R(4, 5), "b": R(4)})
case("conv2d", lambda x, W, b: F.conv2d(x, W, b, stride=2, padding=1), {"x": R(2, 3, 6, 6), "W": R(4, 3, 3, 3), "b": R(4)})
case("group_norm", lambda x, W, b: F.group_norm(x, 4, W, b, 1e-5), {"x": R(2, 8, 4, 4), "W": R(8), "b": R(8)})
case("layer_norm", lambda x, W, b: F.layer_norm(x, [8], W, b, 1e-5), {"x": R(2, 3, 8), "W": R(8), "b": R(8)})
case("softmax", lambda x: F.softmax(x, -1), {"x": R(2, 3, 5)})
case("gelu", lambda x: F.gelu(x), {"x": R(4, 6)})
case("silu", lambda x: F.silu(x), {"x": R(4, 6)})
case("quick_gelu", lambda x: x * torch.sigmoid(1.702 * x), {"x": R(4, 6)})
case("attention", lambda q, k, v: torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(8), -1) @ v,
     {"q": R(2, 2, 4, 8), "k": R(2, 2, 6, 8), "v": R(2, 2, 6, 8)})
case("interpolate_nearest", lambda x: F.interpolate(x, scale_factor=2.0, mode="nearest"), {"x": R(1, 2, 3, 3)})
case("mse", lambda a, b: F.mse_loss(a, b).reshape(1), {"a": R(3, 4), "b": R(3, 4)})
case("matmul_bcast", lambda a, b: a @ b, {"a": R(2, 3, 4), "b": R(4, 5)})
case("cat_chunk", lambda a, b: torch.cat([a, b], 1).chunk(3, 1)[1] * 2, {"a": R(2, 3), "b": R(2, 6)})
case("mean_var", lambda x: torch.stack([x.mean(1), x.var(1)]), {"x": R(3, 7)})
out["cases"] = cases

# 3. optimizers: 5 steps with recorded gradients.
def opt_run(make):
    p = R(6, 4).requires_grad_(True)
    p0 = lst(p)
    grads = [R(6, 4) for _ in range(5)]
    opt = make([p])
    traj = []
    for gr in grads:
        p.grad = gr.clone()
        opt.step()
        traj.append(lst(p))
    return {"p0": p0, "grads": [lst(x) for x in grads], "traj": traj}

out["adamw"] = opt_run(lambda ps: torch.optim.AdamW(ps, lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05))
out["adamw_defaults"] = opt_run(lambda ps: torch.optim.AdamW(ps))
out["sgd_nesterov"] = opt_run(lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.01))
out["sgd_plain"] = opt_run(lambda ps: torch.optim.SGD(ps, lr=0.1))

# 4. clip_grad_norm_
ps = [R(3, 4).requires_grad_(True), R(5).requires_grad_(True)]
for p in ps:
    p.grad = R(*p.shape) * 3
gin = [lst(p.grad) for p in ps]
total = torch.nn.utils.clip_grad_norm_(ps, 1.5)
out["clip"] = {"shapes": [list(p.shape) for p in ps], "grads_in": gin, "max_norm": 1.5,
               "total": float(total), "grads_out": [lst(p.grad) for p in ps]}

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference.json"), "w") as f:
    json.dump(out, f)
print("ok", len(cases), "cases")
