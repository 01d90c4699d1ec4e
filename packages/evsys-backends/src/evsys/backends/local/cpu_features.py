"""What the CPU offers the rollout kernels: the x86 SIMD features that decide which int8 kernels run.

The local backend's ``auto`` settings (:mod:`evsys.backends.local.auto_settings`) and the int8 rollout
path read them here, once per process. Three kinds of x86 CPU behave differently:

- **AVX-512 VNNI** (``avx512f`` and ``avx512_vnni``): fbgemm's int8 GEMMs use VNNI dot products, which
  sum int8 products in 32 bits, so activations use the full 8-bit range;
- **AVX2** without AVX-512 VNNI (``avx_vnni`` alone counts as AVX2 here): fbgemm's AVX2 kernels sum
  pairs of products in 16 bits, which full-range activations can saturate, so activations are
  quantized to 7 bits (``reduce_range``);
- **no AVX2**: fbgemm has no kernels (its reference fallbacks are slower than float32 decode).

The kernels themselves can be capped below what the CPU has, by ``FBGEMM_ENABLE_INSTRUCTIONS`` (fbgemm)
and ``ATEN_CPU_CAPABILITY`` (torch's own kernels); the features here are capped the same way, so that
``reduce_range`` always matches the kernels that actually run (and a capped run on an AVX-512 machine
measures the AVX2 kernels' choice, not an AVX2 machine's bandwidth).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch

CpuKind = Literal["avx512-vnni", "avx2", "no-avx2"]
#: ISA names fbgemm's FBGEMM_ENABLE_INSTRUCTIONS / torch's ATEN_CPU_CAPABILITY accept, lowest first
_CAPS = ("default", "avx2", "avx512", "avx512_e1", "avx512_vnni", "avx512_vnni_e1")


@dataclass(frozen=True)
class CpuFeatures:
    """The SIMD features the int8 rollout kernels can use on this CPU (after any kernel cap)."""

    avx2: bool
    avx512: bool
    vnni: bool

    @property
    def kind(self) -> CpuKind:
        """``avx512-vnni`` (VNNI int8 dot products), ``avx2`` (AVX2/AVX-512 without VNNI) or ``no-avx2``."""
        if not self.avx2:
            return "no-avx2"
        return "avx512-vnni" if self.vnni else "avx2"

    @property
    def label(self) -> str:
        """The kind as the docs and the run's log line write it."""
        return {"avx512-vnni": "AVX-512 VNNI", "avx2": "AVX2 without VNNI", "no-avx2": "no AVX2"}[self.kind]

    @property
    def int8_reduce_range(self) -> bool:
        """fbgemm's dynamic int8 GEMM needs 7-bit activations here (16-bit accumulation without VNNI)."""
        return not self.vnni


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The ``flags`` of ``/proc/cpuinfo`` (or of the ``cpuinfo`` text given); empty where unreadable."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        if line.startswith("flags") and ":" in line:
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def _cap(env: Mapping[str, str]) -> int | None:
    """The lowest ISA level FBGEMM_ENABLE_INSTRUCTIONS / ATEN_CPU_CAPABILITY allow (index in ``_CAPS``)."""
    levels = []
    for name in ("FBGEMM_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY"):
        value = env.get(name, "").strip().lower()
        if value in _CAPS:
            levels.append(_CAPS.index(value))
    return min(levels) if levels else None


def features_from(flags: frozenset[str], env: Mapping[str, str] | None = None) -> CpuFeatures:
    """:class:`CpuFeatures` for the ``/proc/cpuinfo`` ``flags``, capped by the kernel-selection variables
    in ``env`` (the process environment by default)."""
    avx2 = "avx2" in flags
    avx512 = avx2 and "avx512f" in flags
    vnni = avx512 and "avx512_vnni" in flags
    cap = _cap(os.environ if env is None else env)
    if cap is not None:
        avx2 = avx2 and cap >= _CAPS.index("avx2")
        avx512 = avx512 and cap >= _CAPS.index("avx512")
        vnni = vnni and cap >= _CAPS.index("avx512_vnni")
    return CpuFeatures(avx2=avx2, avx512=avx512, vnni=vnni)


@functools.cache
def detect() -> CpuFeatures:
    """This process's :class:`CpuFeatures` (read once)."""
    return features_from(cpu_flags())


def fbgemm_in_build() -> bool:
    """torch was built with fbgemm's dynamic-quantization int8 kernels (``quantized::linear_dynamic``)."""
    engines = getattr(torch.backends.quantized, "supported_engines", [])
    return any(e in engines for e in ("fbgemm", "x86")) and hasattr(torch.ops.quantized, "linear_dynamic")


def int8_available(device: torch.device, features: CpuFeatures | None = None) -> bool:
    """The int8 rollout kernels run here: a CPU with AVX2 and a torch built with fbgemm."""
    if device.type != "cpu":
        return False
    return (features or detect()).avx2 and fbgemm_in_build()
