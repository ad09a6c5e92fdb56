"""The engine's block-wise int8 state codec, in NumPy (see :mod:`optimist.optim.codecs`)."""

from __future__ import annotations

import numpy as np

QUANT_BLOCK = 256


def _int8_code(t: np.ndarray, mant_bits: int) -> np.ndarray:
    """t in [0, 1] -> nearest code on a grid of 4 exponent bits (2^-15 .. 1) and mant_bits."""
    exponent = np.floor(np.log2(np.where(t > 0, t, 1.0)))
    mantissa = t / 2.0**exponent - 1.0  # in [0, 1)
    steps = np.round(mantissa * 2**mant_bits)  # ties: the C code rounds half up; see the note
    code = (exponent + 15) * 2**mant_bits + steps
    code = np.clip(code, 1, 15 * 2**mant_bits)
    return np.where(t == 0, 0, code).astype(np.int64)


def _int8_value(code: np.ndarray, mant_bits: int) -> np.ndarray:
    exponent = code // 2**mant_bits - 15
    mantissa = (code % 2**mant_bits) / 2**mant_bits
    return np.where(code == 0, 0.0, (1.0 + mantissa) * 2.0**exponent)


def int8_encode(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Block-wise 8-bit quantization of optimizer state (the engine's ``state_dtype="int8"``).

    Per block of 256 values with absmax ``a``: ``t = |x| / a`` is rounded to the nearest value
    ``(1 + k / 2^M) 2^e`` with ``e`` in -15..0 (byte 0 is exactly 0; nonzero values below
    ``2^-15 a`` take the smallest nonzero code). Blocks with no negative value use ``M = 4``;
    blocks with one use a sign bit and ``M = 3``, and store ``-a`` as their scale. Returns the
    codes (uint8 as int64) and the float32 scales. Values exactly halfway between two codes are
    rounded up (the engine adds half a step to the float's bits), which ``np.round`` does not
    do; such ties are measure-zero in tests with random data.
    """
    flat = np.asarray(x, dtype=np.float32).reshape(-1)
    codes = np.zeros(flat.size, dtype=np.int64)
    scales = np.zeros(-(-flat.size // QUANT_BLOCK), dtype=np.float32)
    for b in range(scales.size):
        block = flat[b * QUANT_BLOCK : (b + 1) * QUANT_BLOCK].astype(np.float64)
        amax = np.float32(np.abs(block).max())
        if amax == 0:
            continue
        # a subnormal absmax, whose float32 inverse overflows: scale the block by 2^24 (exact)
        pre = np.float32(2.0**24) if amax < np.finfo(np.float32).tiny else np.float32(1.0)
        t = np.minimum(np.abs(block) * pre * np.float64(np.float32(1.0) / (amax * pre)), 1.0)
        if (block < 0).any():
            c = _int8_code(t, 3) | np.where(block < 0, 0x80, 0)
            scales[b] = -amax
        else:
            c = _int8_code(t, 4)
            scales[b] = amax
        codes[b * QUANT_BLOCK : b * QUANT_BLOCK + block.size] = c
    return codes, scales


def int8_decode(codes: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Inverse of :func:`int8_encode` (float64 values)."""
    out = np.zeros(codes.size)
    for b, scale in enumerate(scales):
        c = codes[b * QUANT_BLOCK : (b + 1) * QUANT_BLOCK]
        if scale >= 0:
            out[b * QUANT_BLOCK : b * QUANT_BLOCK + c.size] = _int8_value(c, 4) * scale
        else:
            magnitude = _int8_value(c & 0x7F, 3) * -scale
            out[b * QUANT_BLOCK : b * QUANT_BLOCK + c.size] = np.where(
                c >= 0x80, -magnitude, magnitude
            )
    return out
