"""A tiny cocotb bench for testing the harness itself (tests/sim/test_runner.py).

``params["offset"]`` is added to the expected value: 0 passes, anything else fails on purpose.
"""

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from vitforge.sim.benches.runner import bench_config
from vitforge.sim.scoreboard import assert_equal


@cocotb.test()
async def adder_adds(dut):
    params = bench_config()
    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    got, want = [], []
    for a in range(8):
        dut.a.value = a
        await FallingEdge(dut.clk)
        await FallingEdge(dut.clk)
        got.append(int(dut.o.value))
        want.append(a + 1 + params["offset"])
    assert_equal(got, want, "adder output")
