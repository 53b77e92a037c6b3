"""Test-only ComfyUI custom node: lets ComfyUI detect iga's small SD1 test checkpoint.

ComfyUI recognises a checkpoint by matching the UNet config it reads from the tensor shapes against its list of
supported model configs; SD1.5's entry asks for 320 base channels. The test checkpoint
(``iga.models.testing.build_small_sd1``: full-size CLIP-L and VAE, a UNet of SD1.5's structure at 64 base
channels) therefore needs one more entry: SD1.5 in every other respect. Loaded by tests/comfyui_support.py into a
temporary ComfyUI base folder, never shipped.
"""

import comfy.supported_models as supported_models

SMALL_UNET_CHANNELS = 64


class SD15SmallUNet(supported_models.SD15):
    unet_config = {**supported_models.SD15.unet_config, "model_channels": SMALL_UNET_CHANNELS}


if SD15SmallUNet not in supported_models.models:
    supported_models.models.insert(0, SD15SmallUNet)


class IgaTestConfig:
    """Present in /object_info when this module loaded (how the test support checks it)."""

    CATEGORY = "testing"
    RETURN_TYPES = ("STRING",)
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (SD15SmallUNet.__name__,)


NODE_CLASS_MAPPINGS = {"IgaTestConfig": IgaTestConfig}
