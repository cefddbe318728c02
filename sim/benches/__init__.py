"""The cocotb benches (Verilator and Icarus), their harness (:mod:`.runner`), stream drivers and monitors
(:mod:`.drivers`), bench tops (:mod:`.tops`) and reference model (:mod:`.reference`)."""
