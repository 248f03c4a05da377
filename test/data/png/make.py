# Small reference PNGs written by PIL (Debian python3-pil), for test/formats/png.test.ts.
#   /usr/bin/python3 test/data/png/make.py
import os
from PIL import Image, PngImagePlugin
here = os.path.dirname(os.path.abspath(__file__))
def grad(mode, size=(7, 5)):
    im = Image.new("RGBA", size)
    for y in range(size[1]):
        for x in range(size[0]):
            im.putpixel((x, y), (x * 36 % 256, y * 50 % 256, (x * y * 13) % 256, 255 - x * 20))
    return im.convert(mode)
grad("RGB").save(os.path.join(here, "rgb.png"))
grad("RGBA").save(os.path.join(here, "rgba.png"))
grad("L").save(os.path.join(here, "grey.png"))
grad("LA").save(os.path.join(here, "grey_alpha.png"))
grad("RGB").convert("P", palette=Image.ADAPTIVE, colors=16).save(os.path.join(here, "palette.png"))
im16 = Image.new("I;16", (7, 5))
for y in range(5):
    for x in range(7):
        im16.putpixel((x, y), x * 9000 + y * 300)
im16.save(os.path.join(here, "grey16.png"))
info = PngImagePlugin.PngInfo()
info.add_text("parameters", "a cat, (masterpiece:1.2)\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 7x5")
info.add_text("comment", "ünïcödé ✓ 猫")
grad("RGB").save(os.path.join(here, "text.png"), pnginfo=info)
# Expected RGB(A) values as PIL decodes them (converted to RGBA), for every file.
import json
out = {}
for f in sorted(os.listdir(here)):
    if f.endswith(".png"):
        im = Image.open(os.path.join(here, f))
        out[f] = {"mode": im.mode, "rgba": list(im.convert("RGBA").tobytes()), "text": dict(im.text) if hasattr(im, "text") else {}}
json.dump(out, open(os.path.join(here, "expected.json"), "w"))
print("ok", len(out))
