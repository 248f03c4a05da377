# The PyTorch side of bench/train.ts (b): one LoRA training step on the tiny fixture UNet written
# directly in python3-torch — forward, MSE loss against the noise, backward, AdamW step — with the
# UNet of bench/sd_reference.py (plain torch, diffusers names) and kohya's LoRA module
#   y = base(x) + lora_up(lora_down(x)) · alpha/rank
# on the layers the LoRA init file names. The init (lora_down random, lora_up zero) and the inputs
# come from the temp safetensors file bench/train.ts writes, so both sides start from the same
# numbers and the first losses can be compared.
#
# argv[1] is a JSON job: {"threads", "config", "weights", "init", "rank", "alpha", "lr",
# "weight_decay", "check_steps", "iters", "warm", "repeats"}; one JSON object is printed.
import json, os, sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import torch.nn as nn
import torch.nn.functional as F
from sd_reference import best, load_unet, read_safetensors


class LoRALinear(nn.Module):
    def __init__(self, base, down, up, scale):
        super().__init__()
        self.base = base
        self.lora_down = nn.Linear(down.shape[1], down.shape[0], bias=False)
        self.lora_up = nn.Linear(up.shape[1], up.shape[0], bias=False)
        with torch.no_grad():
            self.lora_down.weight.copy_(down)
            self.lora_up.weight.copy_(up)
        self.scale = scale

    def forward(self, x):
        return self.base(x) + self.lora_up(self.lora_down(x)) * self.scale


def main():
    job = json.loads(sys.argv[1])
    torch.set_num_threads(job["threads"])
    m = load_unet(job["config"], job["weights"])  # every base parameter frozen
    f = read_safetensors(job["init"])
    paths = sorted({k[len("lora."):].rsplit(".lora_", 1)[0] for k in f if k.startswith("lora.")})
    scale = job["alpha"] / job["rank"]
    for path in paths:
        parent_path, _, name = path.rpartition(".")
        parent = m.get_submodule(parent_path)
        base = parent._modules[name]
        if not isinstance(base, nn.Linear):
            raise SystemExit(f"{path}: not a Linear layer")
        parent._modules[name] = LoRALinear(base, f[f"lora.{path}.lora_down.weight"], f[f"lora.{path}.lora_up.weight"], scale)
    params = [p for p in m.parameters() if p.requires_grad]
    # torch's defaults otherwise (betas, eps; foreach=None, which is the per-tensor loop on CPU in 1.13)
    opt = torch.optim.AdamW(params, lr=job["lr"], weight_decay=job["weight_decay"])
    m.train()
    x, noise, t, ctx = f["input.latents"], f["input.noise"], f["input.timesteps"], f["input.context"]

    def step():
        loss = F.mse_loss(m(x, t, ctx), noise)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    losses = [step() for _ in range(job["check_steps"])]
    ms = best(step, job["iters"], job["warm"], job["repeats"])
    print(json.dumps({
        "step_ms": ms, "losses": losses, "targets": len(paths), "trainable_parameters": sum(p.numel() for p in params),
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }))


if __name__ == "__main__":
    main()
