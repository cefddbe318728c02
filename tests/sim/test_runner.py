"""The cocotb harness: a passing bench keeps no waveform, a failing one names the waveform it left."""

import pytest
from amaranth import Module, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from vitforge.sim.benches.runner import run_bench, simulators

pytestmark = pytest.mark.rtl


class PlusOne(wiring.Component):
    """``o`` is ``a + 1``, registered (one cycle of latency)."""

    a: In(unsigned(8))
    o: Out(unsigned(9))

    def elaborate(self, platform):
        m = Module()
        m.d.sync += self.o.eq(self.a + 1)
        return m


@pytest.mark.parametrize("sim", simulators())
def test_a_failing_bench_leaves_a_waveform(sim, monkeypatch):
    monkeypatch.delenv("VITFORGE_WAVES", raising=False)
    common = dict(name="plus_one", design=PlusOne, key="plus_one", bench="vitforge.sim.benches.selftest", sim=sim)
    build_dir = run_bench(**common, params={"offset": 0})
    assert not list(build_dir.glob("*.fst")), "a passing run keeps no waveform"
    with pytest.raises(AssertionError, match=r"1 of 1 cocotb test\(s\).*waveforms: \S+\.fst") as err:
        run_bench(**common, params={"offset": 1})
    wave = str(err.value).rsplit("waveforms: ", 1)[1].split(",")[0].strip()
    with open(wave, "rb") as f:
        assert f.read(1), "the waveform file is empty"
