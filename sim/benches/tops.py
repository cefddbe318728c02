"""Bench tops: several units side by side in one Verilog module (one build per simulator for all of
them); each unit's ports keep their names behind a prefix (``gelu_i__valid``, ...). Payloads are packed
and unpacked with the units' own layouts, so a width change in a config needs no edit in a bench."""

from __future__ import annotations

from amaranth import Module
from amaranth.lib import wiring

from vitforge.hw.config import HwConfig
from vitforge.hw.nonlinear import GeluUnit, LayerNormUnit, SigmoidUnit, SoftmaxUnit
from vitforge.hw.selector import TokenMean, TokenSelector

__all__ = ["LayerNormLanesTop", "NonlinearTop", "SelectorTop", "SoftmaxLanesTop"]


class _Side(wiring.Component):
    """Units side by side; every port of unit ``u`` appears as ``u_<port>``."""

    def __init__(self, units: dict[str, wiring.Component]):
        self._units = units
        super().__init__({f"{prefix}_{name}": member for prefix, unit in units.items()
                          for name, member in unit.signature.members.items()})

    def elaborate(self, platform):
        m = Module()
        for prefix, unit in self._units.items():
            m.submodules[prefix] = unit
            for name, member in unit.signature.members.items():
                outer, inner = getattr(self, f"{prefix}_{name}"), getattr(unit, name)
                if member.is_signature:
                    if member.flow == wiring.In:
                        wiring.connect(m, wiring.flipped(outer), inner)
                    else:
                        wiring.connect(m, inner, wiring.flipped(outer))
                elif member.flow == wiring.In:
                    m.d.comb += inner.eq(outer)
                else:
                    m.d.comb += outer.eq(inner)
        return m


class NonlinearTop(_Side):
    """GELU, sigmoid, softmax (rows up to ``max_tokens``) and LayerNorm (rows up to ``max_embed_dim``)."""

    def __init__(self, *, config: HwConfig):
        num = config.numerics
        super().__init__({
            "gelu": GeluUnit(numerics=num),
            "sigmoid": SigmoidUnit(numerics=num),
            "softmax": SoftmaxUnit(numerics=num, max_len=config.max_tokens),
            "ln": LayerNormUnit(numerics=num, max_dim=config.max_embed_dim),
        })


class SoftmaxLanesTop(_Side):
    """The softmax at ``unit_lanes`` elements per transfer (rows up to ``max_tokens``): its pipelined rows."""

    def __init__(self, *, config: HwConfig):
        super().__init__({"softmax": SoftmaxUnit(numerics=config.numerics, max_len=config.max_tokens,
                                                 lanes=config.unit_lanes)})


class LayerNormLanesTop(_Side):
    """One LayerNorm unit of ``lanes`` lanes (rows up to ``max_embed_dim``), ports behind ``ln_``: its
    overlapping rows."""

    def __init__(self, *, config: HwConfig, lanes: int):
        super().__init__({"ln": LayerNormUnit(numerics=config.numerics, max_dim=config.max_embed_dim, lanes=lanes)})


class SelectorTop(_Side):
    """The token selector (``max_heads``, ``max_tokens``, ``max_embed_dim``) and a token-mean unit."""

    def __init__(self, *, config: HwConfig):
        super().__init__({
            "sel": TokenSelector(heads=config.max_heads, max_tokens=config.max_tokens, max_dim=config.max_embed_dim),
            "mean": TokenMean(max_len=config.max_tokens),
        })
