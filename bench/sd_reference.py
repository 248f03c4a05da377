# The PyTorch side of bench/sd.ts: a compact UNet2DConditionModel in plain torch (diffusers is
# not installed), written from diffusers 0.25 unets/unet_2d_condition.py, unet_2d_blocks.py,
# resnet.py, attention.py and transformer_2d.py for the SD 1.x/2.x blocks only, with diffusers'
# module names so a diffusers safetensors file loads name for name. Attention is the same math
# composition sdtune uses on libtorch 1.13 (q kᵀ·scale → softmax → ·v), which has no fused op.
#
# Run by bench/sd.ts with Debian's python3-torch; argv[1] is a JSON job, one JSON object is printed.
#   {"mode": "time", "threads": n, "tiny": {...}, "sd15": {...}}  timings (+ the tiny model checked
#                                                                  against the fixture outputs)
#   {"mode": "peak", "threads": n, "weights", "config", "inputs"}  one step; peak RSS of this process
import json, math, resource, struct, sys, time
import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64, "I64": torch.int64, "I32": torch.int32}


# ---- safetensors (no safetensors package either): header, then each tensor read into its own memory
def read_safetensors(path):
    out = {}
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        start = 8 + n
        for key, e in header.items():
            if key == "__metadata__":
                continue
            a, b = e["data_offsets"]
            buf = bytearray(b - a)
            f.seek(start + a)
            f.readinto(buf)
            t = torch.frombuffer(buf, dtype=DTYPES[e["dtype"]]) if b > a else torch.empty(0, dtype=DTYPES[e["dtype"]])
            out[key] = t.reshape(e["shape"])
    return out


def write_safetensors(path, tensors):
    header, blobs, off = {}, [], 0
    for k in sorted(tensors):
        t = tensors[k].detach().contiguous().float()
        b = t.numpy().tobytes()
        header[k] = {"dtype": "F32", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


# ---- the model (built on 'meta', then every parameter set from the file: no random init) ----------
META = {"device": "meta"}


def attention(q, k, v):
    s = torch.matmul(q, k.transpose(-2, -1))
    s.mul_(1 / math.sqrt(q.shape[-1]))
    return s.softmax(-1).matmul(v)


class Attention(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False, **META)
        self.to_k = nn.Linear(ctx_dim, dim, bias=False, **META)
        self.to_v = nn.Linear(ctx_dim, dim, bias=False, **META)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, **META), nn.Dropout(0.0)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, c = x.shape
        h = self.heads
        split = lambda t: t.reshape(b, t.shape[1], h, c // h).transpose(1, 2)
        o = attention(split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx)))
        return self.to_out[0](o.transpose(1, 2).reshape(b, n, c))


class GEGLU(nn.Module):
    def __init__(self, dim, inner):
        super().__init__()
        self.proj = nn.Linear(dim, inner * 2, **META)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, dim=-1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, dim * 4), nn.Dropout(0.0), nn.Linear(dim * 4, dim, **META)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, heads, ctx_dim):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, **META)
        self.attn1 = Attention(dim, dim, heads)
        self.norm2 = nn.LayerNorm(dim, **META)
        self.attn2 = Attention(dim, ctx_dim, heads)
        self.norm3 = nn.LayerNorm(dim, **META)
        self.ff = FeedForward(dim)

    def forward(self, x, ctx):
        x = self.attn1(self.norm1(x)) + x
        x = self.attn2(self.norm2(x), ctx) + x
        return self.ff(self.norm3(x)) + x


class Transformer2DModel(nn.Module):
    def __init__(self, ch, heads, ctx_dim, groups, linear, depth):
        super().__init__()
        self.linear = linear
        self.norm = nn.GroupNorm(groups, ch, eps=1e-6, **META)
        proj = (lambda: nn.Linear(ch, ch, **META)) if linear else (lambda: nn.Conv2d(ch, ch, 1, **META))
        self.proj_in = proj()
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, heads, ctx_dim) for _ in range(depth)])
        self.proj_out = proj()

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        n = self.norm(x)
        if self.linear:
            t = self.proj_in(n.permute(0, 2, 3, 1).reshape(b, h * w, c))
        else:
            t = self.proj_in(n).permute(0, 2, 3, 1).reshape(b, h * w, c)
        for blk in self.transformer_blocks:
            t = blk(t, ctx)
        if self.linear:
            out = self.proj_out(t).reshape(b, h, w, c).permute(0, 3, 1, 2)
        else:
            out = self.proj_out(t.reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous())
        return out + x


class ResnetBlock2D(nn.Module):
    def __init__(self, cin, cout, temb, groups, eps):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin, eps=eps, **META)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, **META)
        self.time_emb_proj = nn.Linear(temb, cout, **META)
        self.norm2 = nn.GroupNorm(groups, cout, eps=eps, **META)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, **META)
        self.conv_shortcut = nn.Conv2d(cin, cout, 1, **META) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return (self.conv_shortcut(x) if self.conv_shortcut is not None else x) + h


class Downsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1, **META)

    def forward(self, x):
        return self.conv(x)


class Upsample2D(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, 3, padding=1, **META)

    def forward(self, x, size):
        return self.conv(F.interpolate(x, size=size, mode="nearest"))


class DownBlock(nn.Module):
    def __init__(self, cin, cout, heads, cross, add_down, c):
        super().__init__()
        n = c["layers"]
        self.resnets = nn.ModuleList([ResnetBlock2D(cin if j == 0 else cout, cout, c["temb"], c["groups"], c["eps"]) for j in range(n)])
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, c["ctx"], c["groups"], c["linear"], c["depth"]) for _ in range(n)]) if cross else None
        self.downsamplers = nn.ModuleList([Downsample2D(cout)]) if add_down else None

    def forward(self, h, temb, ctx):
        skips = []
        for j, r in enumerate(self.resnets):
            h = r(h, temb)
            if self.attentions is not None:
                h = self.attentions[j](h, ctx)
            skips.append(h)
        if self.downsamplers is not None:
            h = self.downsamplers[0](h)
            skips.append(h)
        return h, skips


class UpBlock(nn.Module):
    def __init__(self, cin, cout, prev, heads, cross, add_up, c):
        super().__init__()
        n = c["layers"] + 1
        self.resnets = nn.ModuleList([
            ResnetBlock2D((prev if j == 0 else cout) + (cin if j == n - 1 else cout), cout, c["temb"], c["groups"], c["eps"]) for j in range(n)
        ])
        self.attentions = nn.ModuleList([Transformer2DModel(cout, heads, c["ctx"], c["groups"], c["linear"], c["depth"]) for _ in range(n)]) if cross else None
        self.upsamplers = nn.ModuleList([Upsample2D(cout)]) if add_up else None

    def forward(self, h, skips, temb, ctx, size):
        for j, r in enumerate(self.resnets):
            h = r(torch.cat([h, skips.pop()], 1), temb)
            if self.attentions is not None:
                h = self.attentions[j](h, ctx)
        if self.upsamplers is not None:
            h = self.upsamplers[0](h, size)
        return h


class MidBlock(nn.Module):
    def __init__(self, ch, heads, c):
        super().__init__()
        self.attentions = nn.ModuleList([Transformer2DModel(ch, heads, c["ctx"], c["groups"], c["linear"], c["depth"])])
        self.resnets = nn.ModuleList([ResnetBlock2D(ch, ch, c["temb"], c["groups"], c["eps"]) for _ in range(2)])

    def forward(self, h, temb, ctx):
        return self.resnets[1](self.attentions[0](self.resnets[0](h, temb), ctx), temb)


class TimestepEmbedding(nn.Module):
    def __init__(self, cin, dim):
        super().__init__()
        self.linear_1 = nn.Linear(cin, dim, **META)
        self.linear_2 = nn.Linear(dim, dim, **META)

    def forward(self, x):
        return self.linear_2(F.silu(self.linear_1(x)))


class UNet2DConditionModel(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        ch = cfg["block_out_channels"]
        nlev = len(ch)
        h = cfg.get("num_attention_heads") or cfg.get("attention_head_dim", 8)
        heads = h if isinstance(h, list) else [h] * nlev
        self.cfg, self.ch = cfg, ch
        c = {
            "layers": cfg.get("layers_per_block", 2), "temb": ch[0] * 4, "groups": cfg.get("norm_num_groups", 32),
            "eps": cfg.get("norm_eps", 1e-5), "ctx": cfg["cross_attention_dim"], "linear": bool(cfg.get("use_linear_projection")),
            "depth": cfg.get("transformer_layers_per_block", 1),
        }
        self.conv_in = nn.Conv2d(cfg.get("in_channels", 4), ch[0], 3, padding=1, **META)
        self.time_embedding = TimestepEmbedding(ch[0], c["temb"])
        downs, out = [], ch[0]
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, out = out, ch[i]
            downs.append(DownBlock(cin, out, heads[i], kind == "CrossAttnDownBlock2D", i < nlev - 1, c))
        self.down_blocks = nn.ModuleList(downs)
        self.mid_block = MidBlock(ch[-1], heads[-1], c)
        rev, rheads, ups = ch[::-1], heads[::-1], []
        out = rev[0]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, out = out, rev[i]
            ups.append(UpBlock(rev[min(i + 1, nlev - 1)], out, prev, rheads[i], kind == "CrossAttnUpBlock2D", i < nlev - 1, c))
        self.up_blocks = nn.ModuleList(ups)
        self.conv_norm_out = nn.GroupNorm(c["groups"], ch[0], eps=c["eps"], **META)
        self.conv_out = nn.Conv2d(ch[0], cfg.get("out_channels", 4), 3, padding=1, **META)

    def time_proj(self, t):
        # diffusers get_timestep_embedding with flip_sin_to_cos and freq_shift
        half = self.ch[0] // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32) / (half - self.cfg.get("freq_shift", 0))
        args = t.float()[:, None] * exponent.exp()[None, :]
        emb = torch.cat([args.sin(), args.cos()], -1)
        return torch.cat([emb[:, half:], emb[:, :half]], -1) if self.cfg.get("flip_sin_to_cos", True) else emb

    def forward(self, sample, t, ctx):
        b = sample.shape[0]
        t = t.reshape(1).expand(b) if t.ndim == 0 else t
        temb = self.time_embedding(self.time_proj(t)).to(sample.dtype)
        h = self.conv_in(sample)
        skips = [h]
        for blk in self.down_blocks:
            h, s = blk(h, temb, ctx)
            skips += s
        h = self.mid_block(h, temb, ctx)
        for blk in self.up_blocks:
            n = len(blk.resnets)
            mine, skips = skips[-n:], skips[:-n]
            size = skips[-1].shape[2:] if skips else None
            h = blk(h, mine, temb, ctx, size)
        return self.conv_out(F.silu(self.conv_norm_out(h)))


def load_unet(config_path, weights_path):
    with open(config_path) as f:
        cfg = json.load(f)
    m = UNet2DConditionModel(cfg)
    sd = read_safetensors(weights_path)
    own = dict(m.named_parameters())
    missing, unexpected = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or unexpected:
        raise SystemExit(f"{weights_path}: missing {missing[:6]} unexpected {unexpected[:6]}")
    for name, p in own.items():
        if tuple(sd[name].shape) != tuple(p.shape):
            raise SystemExit(f"{weights_path}: {name} has shape {tuple(sd[name].shape)}, the model wants {tuple(p.shape)}")
        mod_path, _, pname = name.rpartition(".")
        m.get_submodule(mod_path)._parameters[pname] = nn.Parameter(sd[name].float(), requires_grad=False)
    return m.eval()


def timeit(fn, n, warm):
    for _ in range(warm):
        fn()
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1000


def best(fn, n, warm, repeats):
    # the best of `repeats` means, as bench/sd.ts does for the tiny model
    return min(timeit(fn, n, warm if r == 0 else 0) for r in range(repeats))


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    out = {}
    with torch.no_grad():
        if job["mode"] == "peak":
            m = load_unet(job["config"], job["weights"])
            x = read_safetensors(job["inputs"])
            t = time.perf_counter()
            y = m(x["sample"], x["timestep"], x["context"])
            out["step_ms"] = (time.perf_counter() - t) * 1000
            out["finite"] = bool(torch.isfinite(y).all())
            out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            print(json.dumps(out))
            return
        tj = job["tiny"]
        m = load_unet(tj["config"], tj["weights"])
        x = read_safetensors(tj["inputs"])
        ref = read_safetensors(tj["outputs"])
        err = 0.0
        for kind in ("int", "float", "scalar"):
            y = m(x["sample"], x[f"timestep_{kind}"], x["encoder_hidden_states"])
            err = max(err, (y - ref[f"out.timestep_{kind}"]).abs().max().item())
        out["tiny_max_abs_err"] = err
        out["tiny_ms"] = best(lambda: m(x["sample"], x["timestep_int"], x["encoder_hidden_states"]), tj["iters"], tj["warm"], tj["repeats"])
        del m
        sj = job["sd15"]
        m = load_unet(sj["config"], sj["weights"])
        x = read_safetensors(sj["inputs"])
        y = m(x["sample"], x["timestep"], x["context"])
        write_safetensors(sj["output"], {"out": y})
        out["sd15_ms"] = timeit(lambda: m(x["sample"], x["timestep"], x["context"]), sj["iters"], sj["warm"])
    print(json.dumps(out))


if __name__ == "__main__":  # bench/train_reference.py imports the model
    main()
