"""Tiny, seeded stand-ins for SD 1.5, SDXL and FLUX.1 (tests, CI and the offline demo).

Each tiny model has its family's real architecture (UNet with one or two CLIP text encoders, or the
FLUX transformer with CLIP + T5) at toy width, with seeded random weights. It is saved once with
`save_pretrained` under `models_dir/<name>` and then loaded through the same `from_pretrained` path
as a real checkpoint. The configs follow the spirit of diffusers' own pipeline tests.

Resolution: 64 px. The tiny VAEs have two blocks (downscale 2), so 64 px images give 32x32 latents;
FLUX packs those 2x2 into 256 image tokens.

Tokenizers cannot be downloaded, so they are built here, deterministically:
- CLIP: a byte-level BPE in CLIP's format (`</w>` end-of-word suffix, <|startoftext|>/<|endoftext|>),
  trained with `tokenizers` on the most common English words from `wordfreq`. Common words
  ("photo", "person", "painting") are single tokens; rare trigger words ("rraj") split into pieces,
  as they do in the real CLIP vocabulary.
- T5: a Unigram vocabulary of the same words scored by their wordfreq log-frequency, plus single
  characters, wrapped as transformers' T5 tokenizer.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

from storage.files import fsync_dir

log = logging.getLogger(__name__)

TINY_MODEL_NAMES = ("tiny-sd15", "tiny-sdxl", "tiny-flux")
TINY_RESOLUTION = 64
# Bump when a tiny config changes: an older build on disk is then rebuilt.
TINY_BUILD_VERSION = 1
_BUILD_STAMP = "likeness_tiny.json"
_SEED = 1234

_WORD_COUNT = 5000
_CLIP_VOCAB_SIZE = 8192
_CLIP_MAX_LENGTH = 77
_T5_MAX_LENGTH = 77
_HIDDEN = 32
# The same split regex CLIP uses (and transformers' CLIPTokenizer applies at encode time).
_CLIP_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def ensure_tiny_model(name: str, models_dir: Path) -> Path:
    """Return models_dir/<name>, building it first if it is missing or from an older build.

    The model is built in a temporary folder next to the target and renamed into place, so a crash
    never leaves a half-built model; concurrent builders are harmless (the first rename wins).
    """
    if name not in TINY_MODEL_NAMES:
        raise ValueError(f"unknown tiny model {name!r}; expected one of {', '.join(TINY_MODEL_NAMES)}")
    models_dir = Path(models_dir)
    target = models_dir / name
    if _is_current_build(target):
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-building-", dir=models_dir))
    try:
        _BUILDERS[name](staging)
        (staging / _BUILD_STAMP).write_text(json.dumps({"name": name, "version": TINY_BUILD_VERSION}))
        _fsync_tree(staging)
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("built tiny model %s at %s", name, target)
    return target


def _is_current_build(target: Path) -> bool:
    try:
        stamp = json.loads((target / _BUILD_STAMP).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("version") == TINY_BUILD_VERSION


def _move_into_place(staging: Path, target: Path) -> None:
    if target.exists():
        if _is_current_build(target):  # another process finished first
            return
        stale = target.with_name(f".{target.name}-stale-{os.getpid()}")
        os.replace(target, stale)
        shutil.rmtree(stale, ignore_errors=True)
    try:
        os.replace(staging, target)
    except OSError:
        if not _is_current_build(target):
            raise
    fsync_dir(target.parent)


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    for folder in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]:
        fsync_dir(folder)


# --------------------------------------------------------------------------- tokenizers


def _common_words() -> list[tuple[str, float]]:
    """The most common English words with their frequencies (alphabetic words only)."""
    from wordfreq import top_n_list, word_frequency

    words = [w for w in top_n_list("en", _WORD_COUNT) if w.isalpha() and w.isascii()]
    return [(w, word_frequency(w, "en")) for w in words]


def build_clip_tokenizer():
    """A CLIP-format byte-level BPE tokenizer trained on common English words (deterministic)."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    trainer_tok = Tokenizer(models.BPE(continuing_subword_prefix="", end_of_word_suffix="</w>"))
    trainer_tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    trainer_tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_CLIP_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    # Registering every base symbol up front fixes their ids; the trainer otherwise numbers
    # end-of-word symbols in hash order and breaks count ties differently on every run.
    base_symbols = alphabet + [c + "</w>" for c in alphabet]
    bpe_trainer = trainers.BpeTrainer(
        vocab_size=_CLIP_VOCAB_SIZE,
        min_frequency=1,
        initial_alphabet=alphabet,
        special_tokens=base_symbols,
        end_of_word_suffix="</w>",
        show_progress=False,
    )
    trainer_tok.train_from_iterator(_weighted_words(), bpe_trainer)
    model = json.loads(trainer_tok.to_str())["model"]
    vocab = dict(model["vocab"])
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    merges = [tuple(m) for m in model["merges"]]
    return CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=_CLIP_MAX_LENGTH)


def _weighted_words():
    """Each word repeated roughly in proportion to its frequency (capped), for BPE pair counts."""
    for word, freq in _common_words():
        repeats = min(50, max(1, int(freq * 1e5)))
        for _ in range(repeats):
            yield word


def build_t5_tokenizer():
    """A T5-style Unigram tokenizer: common words whole, everything else by characters."""
    from transformers import T5Tokenizer

    pieces: list[tuple[str, float]] = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)]
    seen = {p for p, _ in pieces}
    for word, freq in _common_words():
        piece = "\u2581" + word
        if piece not in seen:
            pieces.append((piece, math.log(freq)))
            seen.add(piece)
    chars = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.,!?'\"-:;()&/"
    for char in chars:
        for piece in ("\u2581" + char, char):
            if piece not in seen:
                pieces.append((piece, -20.0))
                seen.add(piece)
    pieces.append(("\u2581", -25.0))
    return T5Tokenizer(vocab=pieces, extra_ids=0, model_max_length=_T5_MAX_LENGTH)


def _save_tokenizer(tokenizer, folder: Path) -> None:
    tokenizer.save_pretrained(folder)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())["model"]
    if backend.get("type") == "BPE":  # CLIP's classic files too, for tools that read them
        (folder / "vocab.json").write_text(json.dumps(backend["vocab"], ensure_ascii=False))
        merges = ["#version: 0.2"] + [" ".join(m) for m in backend["merges"]]
        (folder / "merges.txt").write_text("\n".join(merges) + "\n")


# --------------------------------------------------------------------------- components


def _seeded(offset: int):
    import torch

    torch.manual_seed(_SEED + offset)


def _clip_text_encoder(tokenizer, offset: int, with_projection: bool = False):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=_HIDDEN,
        intermediate_size=37,
        num_hidden_layers=5,
        num_attention_heads=4,
        max_position_embeddings=_CLIP_MAX_LENGTH,
        projection_dim=_HIDDEN,
        hidden_act="gelu",
        layer_norm_eps=1e-5,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    _seeded(offset)
    model_class = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return model_class(config)


def _vae(offset: int, latent_channels: int, **extra):
    from diffusers import AutoencoderKL

    _seeded(offset)
    return AutoencoderKL(
        block_out_channels=(32, 64),
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=latent_channels,
        norm_num_groups=32,
        sample_size=TINY_RESOLUTION,
        **extra,
    )


def _sd_scheduler_config() -> dict:
    # SD 1.x / SDXL training schedule: scaled-linear betas, 1000 steps, epsilon prediction.
    return dict(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type="epsilon",
        steps_offset=1,
    )


def _unet(offset: int, cross_attention_dim: int, **extra):
    from diffusers import UNet2DConditionModel

    _seeded(offset)
    return UNet2DConditionModel(
        block_out_channels=(32, 64),
        layers_per_block=2,
        sample_size=TINY_RESOLUTION // 2,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        **extra,
    )


def _build_sd15(dest: Path) -> None:
    from diffusers import PNDMScheduler, StableDiffusionPipeline

    tokenizer = build_clip_tokenizer()
    pipe = StableDiffusionPipeline(
        vae=_vae(1, latent_channels=4, scaling_factor=0.18215),
        text_encoder=_clip_text_encoder(tokenizer, 2),
        tokenizer=tokenizer,
        unet=_unet(3, cross_attention_dim=_HIDDEN),
        scheduler=PNDMScheduler(skip_prk_steps=True, **_sd_scheduler_config()),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    _save_pipeline(pipe, dest)


def _build_sdxl(dest: Path) -> None:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline

    tokenizer = build_clip_tokenizer()
    time_embed_dim = 8
    pipe = StableDiffusionXLPipeline(
        vae=_vae(1, latent_channels=4, scaling_factor=0.13025, force_upcast=True),
        text_encoder=_clip_text_encoder(tokenizer, 2),
        text_encoder_2=_clip_text_encoder(tokenizer, 3, with_projection=True),
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=_unet(
            4,
            cross_attention_dim=2 * _HIDDEN,  # both encoders' hidden states, concatenated
            attention_head_dim=(2, 4),
            use_linear_projection=True,
            addition_embed_type="text_time",
            addition_time_embed_dim=time_embed_dim,
            transformer_layers_per_block=(1, 2),
            # pooled text embeds + 6 micro-conditioning ids (sizes and crop), as in SDXL
            projection_class_embeddings_input_dim=_HIDDEN + 6 * time_embed_dim,
        ),
        scheduler=EulerDiscreteScheduler(**_sd_scheduler_config()),
    )
    _save_pipeline(pipe, dest)


def _build_flux(dest: Path) -> None:
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import T5Config, T5EncoderModel

    clip_tokenizer = build_clip_tokenizer()
    t5_tokenizer = build_t5_tokenizer()
    latent_channels = 16  # as FLUX.1's VAE; the transformer sees 2x2-packed latents (64 channels)
    _seeded(3)
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tokenizer),
            d_model=_HIDDEN,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
            decoder_start_token_id=t5_tokenizer.pad_token_id,
        )
    )
    _seeded(4)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4 * latent_channels,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=_HIDDEN,
        pooled_projection_dim=_HIDDEN,
        guidance_embeds=True,  # like FLUX.1 [dev], which is guidance-distilled
        axes_dims_rope=(4, 4, 8),
    )
    pipe = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(  # FLUX.1 [dev]'s published scheduler config
            shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
            base_image_seq_len=256, max_image_seq_len=4096,
        ),
        vae=_vae(1, latent_channels=latent_channels, scaling_factor=0.3611, shift_factor=0.1159,
                 use_quant_conv=False, use_post_quant_conv=False),
        text_encoder=_clip_text_encoder(clip_tokenizer, 2),
        tokenizer=clip_tokenizer,
        text_encoder_2=t5,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    _save_pipeline(pipe, dest)


def _save_pipeline(pipe, dest: Path) -> None:
    pipe.save_pretrained(dest, safe_serialization=True)
    for sub in ("tokenizer", "tokenizer_2"):
        tokenizer = getattr(pipe, sub, None)
        if tokenizer is not None:
            _save_tokenizer(tokenizer, dest / sub)


_BUILDERS = {"tiny-sd15": _build_sd15, "tiny-sdxl": _build_sdxl, "tiny-flux": _build_flux}
