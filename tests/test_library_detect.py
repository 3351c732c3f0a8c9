"""Family detection from tensor names and shapes of the REAL architectures (SD 1.5, SD 2.x, SDXL, SDXL
refiner and the inpainting variants), built from the shipped diffusers configs on the ``meta`` device
(no memory for weights) and renamed to the original checkpoint layout; LoRAs from the real UNets'
attention layers. The configs themselves are checked against the published parameter counts.
"""

from __future__ import annotations

import pytest

from easel.server.library.configs import CONFIGS
from easel.server.library.detect import describe, fits
from easel.server.library.header import TensorInfo
from helpers.real_archs import checkpoint, kohya_lora, modules, peft_lora

# published sizes: SD 1.5 / 2.x / SDXL UNets, the SD VAE, CLIP-L, OpenCLIP-H (23 layers), OpenCLIP-bigG
PARAMS = {"sd1": 859_520_964, "sd2": 865_910_724, "sdxl": 2_567_463_684}
TEXT_PARAMS = {"clip_l": 123_060_480, "clip_h": 340_387_840, "clip_g": 694_659_840}


def test_shipped_configs_have_the_published_sizes():
    for arch, want in PARAMS.items():
        assert sum(v.numel() for v in modules(arch)["unet"].values()) == want, arch
    assert sum(v.numel() for v in modules("sd1")["vae"].values()) == 83_653_863
    texts = {"clip_l": modules("sd1")["text_encoder"], "clip_h": modules("sd2")["text_encoder"],
             "clip_g": modules("sdxl")["text_encoder_2"]}
    for name, state in texts.items():
        assert sum(v.numel() for v in state.values()) == TEXT_PARAMS[name], name


@pytest.mark.parametrize("arch, family, inpaint, native, context", [
    ("sd1", "sd1", False, 512, 768),
    ("sd1-inpaint", "sd1", True, 512, 768),
    ("sd2", "sd2", False, 512, 1024),
    ("sd2-inpaint", "sd2", True, 512, 1024),
    ("sdxl", "sdxl", False, 1024, 2048),
    ("sdxl-inpaint", "sdxl", True, 1024, 2048),
    ("sdxl-refiner", "sdxl-refiner", False, 1024, 1280),
])
def test_real_checkpoints(arch, family, inpaint, native, context):
    d = describe(checkpoint(arch))
    assert (d.kind, d.family, d.inpaint, d.arch, d.native, d.context, d.problem) == \
        ("checkpoint", family, inpaint, arch, native, context, None)
    assert CONFIGS[d.arch][0] == family


def test_sd2_prediction_picks_the_768_v_config():
    d = describe(checkpoint("sd2-v"), v_prediction=True)
    assert (d.arch, d.native, d.prediction) == ("sd2-v", 768, "v")
    assert describe(checkpoint("sd2-inpaint"), v_prediction=True).arch == "sd2-inpaint"  # inpainting is epsilon
    xl_v = {**checkpoint("sdxl"), "v_pred": TensorInfo("F32", ())}
    assert (describe(xl_v).prediction, describe(xl_v).arch) == ("v", "sdxl")
    assert describe({**xl_v, "ztsnr": TensorInfo("F32", ())}).prediction == "v-ztsnr"


def test_v_prediction_files_get_a_v_prediction_scheduler():
    from diffusers import EulerDiscreteScheduler

    from easel.server.engine.single_file import scheduler_overrides
    from easel.server.library.configs import spec

    base = EulerDiscreteScheduler.from_config(spec("sdxl")["scheduler"])
    for markers, want in (({}, ("epsilon", False)), ({"v_pred": TensorInfo("F32", ())}, ("v_prediction", False)),
                          ({"v_pred": TensorInfo("F32", ()), "ztsnr": TensorInfo("F32", ())}, ("v_prediction", True))):
        desc = describe({**checkpoint("sdxl"), **markers})
        sched = EulerDiscreteScheduler.from_config(base.config, **scheduler_overrides(desc))
        assert (sched.config.prediction_type, sched.config.rescale_betas_zero_snr) == want, markers


@pytest.mark.parametrize("arch", ["sd1", "sdxl"])
def test_text_encoder_keys_without_text_model_level(arch):
    d = describe(checkpoint(arch, text_model=False))
    assert (d.family, d.arch, d.problem) == (arch, arch, None)


@pytest.mark.parametrize("dtype", ["F32", "F16", "BF16"])
def test_dtype_does_not_matter(dtype):
    assert describe(checkpoint("sd1", dtype=dtype)).arch == "sd1"


def test_unet_only_file_is_named_as_such():
    d = describe(checkpoint("sd1", parts=("unet",)))
    assert d.family == "sd1" and "UNet-only" in d.problem and "text encoder or VAE" in d.problem


def test_other_sizes_have_a_family_but_no_shipped_config():
    ckpt = checkpoint("sd1")
    ckpt["model.diffusion_model.input_blocks.1.1.proj_in.weight"] = TensorInfo("F16", (320, 320))  # linear proj
    d = describe(ckpt)
    assert (d.family, d.arch, d.problem) == ("sd1", None, None)


def test_other_architectures_are_named():
    flux = {"model.diffusion_model.input_blocks.0.0.weight": TensorInfo("F16", (320, 4, 3, 3)),
            "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": TensorInfo("F16", (9216, 3072))}
    assert "FLUX.1 single file" in describe(flux).problem
    transformer_only = {"double_blocks.0.img_attn.qkv.weight": TensorInfo("BF16", (9216, 3072)),
                        "single_blocks.0.linear1.weight": TensorInfo("BF16", (21504, 3072))}
    assert "#config=FOLDER" in describe(transformer_only).problem
    sd3 = {"model.diffusion_model.joint_blocks.0.x_block.attn.qkv.weight": TensorInfo("F16", (4608, 1536))}
    assert "SD 3/3.5 single file" in describe(sd3).problem
    pix2pix = checkpoint("sd1")
    pix2pix["model.diffusion_model.input_blocks.0.0.weight"] = TensorInfo("F16", (320, 8, 3, 3))
    assert "InstructPix2Pix" in describe(pix2pix).problem
    embedding = {"emb_params": TensorInfo("F32", (8, 768))}
    assert describe(embedding).kind == "unknown" and "embedding" in describe(embedding).problem


def test_what_easel_serves_is_said_as_it_is():
    """Files Easel cannot serve say which single files it can: SD 1.x/2.x/SDXL ones, and the flow families'
    ones with a config folder; a flow-model file says only how to serve it."""
    served = ("Easel serves SD 1.x, SD 2.x and SDXL single files, and SD 3/3.5, FLUX.1, FLUX.1 Kontext, Chroma, Z-Image, "
              "Qwen-Image and FLUX.2 Klein ones with a config folder")
    video = {**checkpoint("sd1"), "model.diffusion_model.time_stack.0.weight": TensorInfo("F16", (320,))}
    assert describe(video).problem == f"a video model (SVD); {served}"
    odd = checkpoint("sd1", parts=("unet",))
    for name in [n for n in odd if "attn2.to_k" in n]:
        odd[name] = TensorInfo("F16", (odd[name].shape[0], 512))
    assert describe(odd).problem == f"unknown architecture (cross-attention width 512, no known text encoder); {served}"
    flux = {"model.diffusion_model.input_blocks.0.0.weight": TensorInfo("F16", (320, 4, 3, 3)),
            "model.diffusion_model.double_blocks.0.img_attn.qkv.weight": TensorInfo("F16", (9216, 3072))}
    assert describe(flux).problem == ("a FLUX.1 single file: serve it as 'FILE#config=FOLDER', FOLDER a diffusers "
                                      "folder of the same FLUX.1 model for the text encoders and VAE (docs/models.md)")


def test_vae_files():
    ldm = {k.removeprefix("first_stage_model."): v for k, v in checkpoint("sd1", parts=("vae",)).items()}
    assert describe(ldm).kind == "vae" and describe(ldm).problem is None
    diffusers_layout = {k: TensorInfo("F32", tuple(v.shape)) for k, v in modules("sdxl")["vae"].items()}
    assert describe(diffusers_layout).kind == "vae"


@pytest.mark.parametrize("arch, family, context", [("sd1", "sd1", 768), ("sd2", "sd2", 1024), ("sdxl", "sdxl", 2048)])
def test_loras_of_each_family(arch, family, context):
    for lora in (kohya_lora(arch), peft_lora(arch)):
        d = describe(lora)
        assert (d.kind, d.family, d.context) == ("lora", family, context)
        model = describe(checkpoint(arch))
        assert fits(d, model.context, model.family)
        other = describe(checkpoint("sdxl" if arch != "sdxl" else "sd1"))
        assert not fits(d, other.context, other.family)


def test_lora_without_cross_attention_layers_uses_structure():
    te2_only = {"lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": TensorInfo("F16", (4, 1280))}
    assert describe(te2_only).family == "sdxl"
    self_attn_only = {k: v for k, v in kohya_lora("sdxl").items() if "attn1" in k}
    assert describe(self_attn_only).family == "sdxl"  # several transformer blocks per attention: SDXL
