"""Storage formats for optimizer state: the same codecs as the C++ engine, in torch ops.

``state_dtype`` on every optimizer picks how its element-wise state tensors are stored:

``None``        the parameter's dtype (torch.optim's behaviour; the default);
``"float32"``   float32 (e.g. for bfloat16 parameters);
``"bfloat16"``  bfloat16, written with stochastic rounding (unbiased: E[stored] = value);
``"int8"``      block-wise 8-bit: per block of :data:`QUANT_BLOCK` = 256 values a float32 scale
                (the block's absmax) and one byte per value; tensors under
                :data:`MIN_QUANT_NUMEL` = 4096 elements stay float32.

The int8 code (written once here, in the engine's C++ and in ``optimist.reference``): within a
block of absmax :math:`a`, a value :math:`x` is stored as :math:`t = |x|/a \\in (0, 1]` rounded
to nearest on a float grid with 4 exponent bits (15 binades below 1) and :math:`M` mantissa
bits, as the byte (exponent, mantissa) counted from :math:`2^{-15}`; byte 0 is exactly 0, and
nonzero values below :math:`2^{-15}a` keep the smallest nonzero code (a second moment never
collapses to 0). A block with no negative value uses all 8 bits for the magnitude
(:math:`M = 4`, relative step 1/16); otherwise one bit holds the sign and :math:`M = 3`. The
mode is the sign of the stored scale (:math:`+a` unsigned, :math:`-a` signed). This is the
idea of Dettmers et al., "8-bit Optimizers via Block-wise Quantization" (2022): a per-block
scale and a non-linear 8-bit code with more resolution for small values.

The eager (per-tensor) path decodes a state tensor with :func:`decode`, runs the rule in the
compute precision and stores it back with :func:`encode`; the fused path does the same inside
its block loop. Both round identically, including the random bits of stochastic rounding, which
come from a counter-based hash of (seed, element index): results are reproducible and the two
paths agree bitwise.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor

__all__ = [
    "MIN_QUANT_NUMEL",
    "QUANT_BLOCK",
    "STATE_DTYPES",
    "check_state_dtype",
    "bf16_stochastic",
    "decode",
    "encode",
    "int8_decode",
    "int8_encode",
    "random_bits",
    "segment_bits",
    "storage_dtype",
]

QUANT_BLOCK = 256
MIN_QUANT_NUMEL = 4096
STATE_DTYPES = (None, "float32", "bfloat16", "int8")
_MIN_EXPONENT = 127 - 15
_MASK32 = 0xFFFFFFFF


def check_state_dtype(
    value: object, accepted: tuple[str | None, ...] = STATE_DTYPES, owner: str = ""
) -> None:
    """Raise ``ValueError`` naming the accepted values unless ``value`` is one of ``accepted``."""
    if value not in accepted:
        names = ", ".join(repr(v) for v in accepted)
        known = value in STATE_DTYPES and owner
        why = f"; {owner} keeps its state in the parameter's dtype" if known else ""
        raise ValueError(
            f"Invalid state_dtype: {value!r} (state_dtype must be one of {names}{why})"
        )


def storage_dtype(state_dtype: str | None, param: Tensor) -> torch.dtype:
    """The dtype a state tensor of ``param`` is stored in under ``state_dtype``."""
    if state_dtype is None or not param.is_floating_point():
        return param.dtype  # complex parameters keep complex state (torch's view_as_real rule)
    if state_dtype == "int8":
        if param.numel() < MIN_QUANT_NUMEL:
            return torch.float32 if param.dtype != torch.float64 else param.dtype
        return torch.int8
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[state_dtype]


def _float_bits(x: Tensor) -> Tensor:
    return x.contiguous().view(torch.int32).to(torch.int64) & _MASK32


def _bits_float(bits: Tensor) -> Tensor:
    return (bits & _MASK32).to(torch.int32).view(torch.float32)


def _code(t: Tensor, mant_bits: int) -> Tensor:
    drop = 23 - mant_bits
    bits = _float_bits(t) + (1 << (drop - 1))
    code = (bits >> drop) - (_MIN_EXPONENT << mant_bits)
    code = code.clamp(1, 15 << mant_bits)
    return torch.where(t == 0, torch.zeros_like(code), code)


def _value(code: Tensor, mant_bits: int) -> Tensor:
    drop = 23 - mant_bits
    t = _bits_float((code + (_MIN_EXPONENT << mant_bits)) << drop)
    return torch.where(code == 0, torch.zeros_like(t), t)


def int8_encode(x: Tensor) -> tuple[Tensor, Tensor]:
    """Quantize ``x`` (any float dtype) block-wise: int8 codes of x's shape, float32 scales."""
    flat = x.detach().reshape(-1).to(torch.float32)
    n = flat.numel()
    blocks = -(-n // QUANT_BLOCK)
    padded = torch.zeros(blocks * QUANT_BLOCK, dtype=torch.float32, device=x.device)
    padded[:n] = flat
    padded = padded.view(blocks, QUANT_BLOCK)
    amax = padded.abs().amax(dim=1)
    negative = (padded < 0).any(dim=1)
    finite = torch.isfinite(amax) & (amax > 0)
    # a subnormal absmax (1 / amax overflows): the block times 2^24, exactly (the C++ codec's
    # int8_encode_subnormal); the stored scale stays amax
    tiny = amax < torch.finfo(torch.float32).tiny
    pre = torch.where(tiny, torch.full_like(amax, 2.0**24), torch.ones_like(amax))
    inv = 1.0 / torch.where(finite, amax * pre, 1.0)
    t = (padded.abs() * pre[:, None] * inv[:, None]).clamp(max=1.0)
    unsigned = _code(t, 4)
    signed = _code(t, 3) | torch.where(padded < 0, 0x80, 0)
    codes = torch.where(negative[:, None], signed, unsigned)
    codes = torch.where(finite[:, None], codes, 0)
    scale = torch.where(negative, -amax, amax)
    scale = torch.where(finite | (amax == 0), scale, torch.full_like(amax, float("nan")))
    scale = torch.where(amax == 0, torch.zeros_like(amax), scale)
    q = codes.to(torch.uint8).view(torch.int8).reshape(-1)[:n].reshape(x.shape)
    return q, scale


def int8_decode(q: Tensor, scale: Tensor) -> Tensor:
    """Inverse of :func:`int8_encode` (float32, q's shape)."""
    n = q.numel()
    blocks = scale.numel()
    codes = torch.zeros(blocks * QUANT_BLOCK, dtype=torch.int64, device=q.device)
    codes[:n] = q.reshape(-1).view(torch.uint8).to(torch.int64)
    codes = codes.view(blocks, QUANT_BLOCK)
    unsigned = _value(codes, 4) * scale[:, None]
    magnitude = _value(codes & 0x7F, 3) * (-scale)[:, None]
    signed = torch.where(codes >= 0x80, -magnitude, magnitude)
    out = torch.where((scale < 0)[:, None], signed, unsigned)
    return out.reshape(-1)[:n].reshape(q.shape)


def _mix(x: Tensor, seed: int | Tensor) -> Tensor:
    """The engine's hash of element indices ``x`` (int64) with ``seed`` (an int or an int64
    tensor broadcast against ``x``): 32 random bits per element."""
    x = ((x * 0x9E3779B1) & _MASK32) ^ (seed & _MASK32)
    x ^= x >> 16
    x = (x * 0x85EBCA6B) & _MASK32
    x ^= x >> 13
    x = (x * 0xC2B2AE35) & _MASK32
    x ^= x >> 16
    return x


def random_bits(seed: int, n: int, offset: int = 0, device: torch.device | None = None) -> Tensor:
    """The engine's counter-based hash: 32 random bits per element index (int64 tensor)."""
    return _mix(torch.arange(offset, offset + n, dtype=torch.int64, device=device), seed)


def segment_bits(seeds: list[int], sizes: list[int], device: torch.device | None = None) -> Tensor:
    """:func:`random_bits` of consecutive segments (``sizes[i]`` elements with ``seeds[i]``,
    each counted from 0) in one pass: the bits of tensors concatenated flat."""
    total = sum(sizes)
    counts = torch.tensor(sizes, dtype=torch.int64, device=device)
    starts = torch.tensor([0, *itertools.accumulate(sizes[:-1])], dtype=torch.int64, device=device)
    where = torch.arange(total, dtype=torch.int64, device=device)
    where -= starts.repeat_interleave(counts, output_size=total)
    seed = torch.tensor(seeds, dtype=torch.int64, device=device)
    return _mix(where, seed.repeat_interleave(counts, output_size=total))


def bf16_stochastic(x: Tensor, seed: int, bits: Tensor | None = None) -> Tensor:
    """Round float values to bfloat16 stochastically (as the engine's bfloat16 state codec);
    ``bits``: the random bits per element (e.g. :func:`segment_bits`) instead of ``seed``'s."""
    flat = x.detach().reshape(-1).to(torch.float32)
    if bits is None:
        bits = random_bits(seed, flat.numel(), device=x.device)
    bits = _float_bits(flat) + (bits & 0xFFFF)
    half = (bits >> 16) & 0xFFFF
    half = torch.where(half >= 0x8000, half - 0x10000, half)  # as a signed 16-bit pattern
    out = half.to(torch.int16).view(torch.bfloat16)
    out = torch.where(torch.isnan(flat), torch.full_like(out, float("nan")), out)
    return out.reshape(x.shape)


def decode(stored: Tensor, scale: Tensor | None, dtype: torch.dtype) -> Tensor:
    """A state tensor as a new tensor of the compute ``dtype`` (int8 needs its ``scale``)."""
    if stored.dtype == torch.int8:
        assert scale is not None
        return int8_decode(stored, scale).to(dtype)
    return stored.to(dtype, copy=True)


def slot_seed(seed: int, index: int, slot: int | None) -> int:
    """The engine's seed for tensor ``index`` of a call: its parameter (``slot=None``) or slot."""
    s = ((seed & _MASK32) * 0x9E3779B1 + (index & _MASK32) * 0x85EBCA6B) & _MASK32
    if slot is not None:
        for _ in range(slot + 1):
            s = (s * 0x01000193 + 0x9E3779B9) & _MASK32
    return s


def encode(
    value: Tensor, stored: Tensor, scale: Tensor | None, *, stochastic: bool, seed: int
) -> None:
    """Write ``value`` (compute precision) into the state tensor ``stored`` (and its scale)."""
    if stored.dtype == torch.int8:
        assert scale is not None
        q, s = int8_encode(value)
        stored.copy_(q)
        scale.copy_(s)
    elif stored.dtype == torch.bfloat16 and stochastic:
        stored.copy_(bf16_stochastic(value, seed))
    else:
        stored.copy_(value)
