# The PyTorch side of `npm run bench`: the same workloads as bench/engine.ts, timed the same way.
# Run by bench/run.ts with Debian's python3-torch (same libtorch build); prints one JSON object.
import json, resource, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
DEV = cfg.get("device", "cpu")
def sync():
    if DEV != "cpu":
        torch.cuda.synchronize()

class TinyNet(nn.Module):
    # Twin of src/torch/examples.ts TinyNet: same layers, order and sizes.
    def __init__(self, c, heads, cin=4):
        super().__init__()
        self.c, self.heads = c, heads
        self.conv_in = nn.Conv2d(cin, c, 3, padding=1)
        self.norm1 = nn.GroupNorm(8, c)
        self.to_q = nn.Linear(c, c, bias=False)
        self.to_k = nn.Linear(c, c, bias=False)
        self.to_v = nn.Linear(c, c, bias=False)
        self.to_out = nn.Linear(c, c)
        self.norm2 = nn.GroupNorm(8, c)
        self.conv_mid = nn.Conv2d(c, c, 3, padding=1)
        self.conv_out = nn.Conv2d(c, cin, 3, padding=1)

    def forward(self, x):
        b, _, h, w = x.shape
        c, heads = self.c, self.heads
        hh = self.conv_in(x)
        tokens = self.norm1(hh).reshape(b, c, h * w).transpose(1, 2)
        split = lambda t: t.reshape(b, h * w, heads, c // heads).transpose(1, 2)
        q, k, v = split(self.to_q(tokens)), split(self.to_k(tokens)), split(self.to_v(tokens))
        if hasattr(F, "scaled_dot_product_attention"):
            att = F.scaled_dot_product_attention(q, k, v)
        else:  # 1.13: the same math composition sdtune uses there
            s = torch.matmul(q, k.transpose(-2, -1))
            s.mul_(1 / (c // heads) ** 0.5)
            att = s.softmax(-1).matmul(v)
        att = att.transpose(1, 2).reshape(b, h * w, c)
        a = self.to_out(att).transpose(1, 2).reshape(b, c, h, w)
        h2 = hh + a
        m = self.conv_mid(F.silu(self.norm2(h2)))
        return self.conv_out(h2 + m)

def timeit(fn, n, warm=3):
    for _ in range(warm):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    sync()
    return (time.perf_counter() - t) / n * 1000

def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0

out = {}
a = torch.randn(16, device=DEV)
b = torch.randn(16, device=DEV)
out["op_add_small"] = timeit(lambda: torch.add(a, b), cfg["op_iters"], 100)
m1, m2 = torch.randn(1024, 1024, device=DEV), torch.randn(1024, 1024, device=DEV)
out["matmul_1024"] = timeit(lambda: m1 @ m2, 10)
xc, wc = torch.randn(1, 320, 64, 64, device=DEV), torch.randn(320, 320, 3, 3, device=DEV)
out["conv3x3_320_64"] = timeit(lambda: F.conv2d(xc, wc, padding=1), 5, 1)

def train_bench(c, heads, batch, size, steps):
    torch.manual_seed(0)
    net = TinyNet(c, heads).to(DEV)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(batch, 4, size, size).to(DEV)
    y = torch.tanh(torch.roll(x, 1, 3) * 0.5) + x.mean(1, keepdim=True)
    def step():
        loss = F.mse_loss(net(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step

out["train_step"] = timeit(train_bench(**cfg["train"], steps=0), cfg["train_steps"])
st = train_bench(**cfg["soak"], steps=0)
rss = []
for i in range(cfg["soak_steps"]):
    st()
    if i == 49 or i == cfg["soak_steps"] - 1:
        rss.append(rss_mb())
out["soak_rss_growth_mb"] = rss[1] - rss[0]
out["soak_rss_mb"] = rss[1]
print(json.dumps(out))
