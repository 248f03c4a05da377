# Reference .pt files for test/formats/torchfile.test.ts, written by real PyTorch (sd-formats.md §2,
# §6.1, §7.1). The tests read the committed files and never need Python.
#
# Regenerate (Debian's python3-torch, torch 1.13; not pyenv's python3):
#   /usr/bin/python3 test/data/pt/make.py
# Every value is deterministic (no random init), so the tests can assert them exactly.
import os
from collections import OrderedDict

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def out(name):
    return os.path.join(HERE, name)


# 1. A state dict covering the storage cases a reader must handle (§2.2):
#    f32, f16, i64, a transposed view and a row slice sharing one storage, a 0-d tensor and an
#    empty tensor.
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
state = OrderedDict()
state["linear.weight"] = base
state["linear.weight_t"] = base.t()  # same storage, strides (1, 4)
state["linear.row1"] = base[1]  # same storage, storage_offset 4
state["half"] = torch.tensor([0.5, -1.25, 3.0], dtype=torch.float16)
state["bf16"] = torch.tensor([1.5, -2.0], dtype=torch.bfloat16)
state["ids"] = torch.tensor([[1, -2], [3, 2**40]], dtype=torch.int64)
state["scalar"] = torch.tensor(2.5)
state["empty"] = torch.zeros(0, 3)
state["f64"] = torch.tensor([1.0 / 3.0], dtype=torch.float64)
torch.save(state, out("state_dict.pt"))

# 2. An A1111 textual-inversion embedding (§6.1, Embedding.save).
vec = torch.linspace(-1.0, 1.0, 16).reshape(2, 8)
vec.requires_grad_(True)
torch.save(
    {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec},
        "name": "my-style",
        "step": 500,
        "sd_checkpoint": "e1441589a6",
        "sd_checkpoint_name": "v1-5-pruned-emaonly",
    },
    out("embedding.pt"),
)


# 3. An A1111 hypernetwork (§7.1): int keys -> (k_state_dict, v_state_dict), each a real
#    module state_dict() (an OrderedDict with _metadata set through BUILD). Tiny widths stand in
#    for 320..1280 so the file stays small; the keys are the real ones.
def hn_module(dim):
    seq = torch.nn.Sequential(torch.nn.Linear(dim, 2 * dim), torch.nn.ReLU(), torch.nn.Linear(2 * dim, dim))
    wrapper = torch.nn.Module()
    wrapper.linear = seq
    with torch.no_grad():
        # Parameter i holds dim + i*0.5 + arange*0.01: recognisable values for the tests.
        for i, p in enumerate(wrapper.parameters()):
            p.copy_(dim + i * 0.5 + torch.arange(p.numel(), dtype=torch.float32).reshape(p.shape) * 0.01)
    return wrapper.state_dict()


hn = {}
for size in (320, 640, 768, 1024, 1280):
    d = size // 320  # 1..4: tiny stand-in widths
    hn[size] = (hn_module(d), hn_module(d))
hn.update(
    {
        "step": 1000,
        "name": "tiny-hn",
        "layer_structure": [1.0, 2.0, 1.0],
        "activation_func": "relu",
        "is_layer_norm": False,
        "weight_initialization": "Normal",
        "sd_checkpoint": None,
        "sd_checkpoint_name": None,
        "activate_output": False,
        "use_dropout": False,
        "dropout_structure": [0.0, 0.0, 0.0],
        "last_layer_dropout": False,
        "optional_info": None,
    }
)
torch.save(hn, out("hypernetwork.pt"))

# 4. A .ckpt-like Lightning checkpoint (§2.3): the weights under 'state_dict'.
torch.save(
    {
        "state_dict": OrderedDict(
            [
                ("model.diffusion_model.out.0.weight", torch.ones(4)),
                ("model.diffusion_model.out.0.bias", torch.zeros(4, dtype=torch.float16)),
            ]
        ),
        "global_step": 10,
        "epoch": 1,
        "pytorch-lightning_version": "1.4.2",
    },
    out("model.ckpt"),
)

# 5. The legacy non-zip format (§2.5).
torch.save(
    OrderedDict([("w", torch.tensor([1.0, 2.0, 3.0])), ("n", torch.tensor([7], dtype=torch.int64))]),
    out("legacy.pt"),
    _use_new_zipfile_serialization=False,
)

for f in sorted(os.listdir(HERE)):
    print(f, os.path.getsize(out(f)))
