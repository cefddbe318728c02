"""The ReRAM crossbar's integer contract: bit-sliced weights, chunked inputs, per-slice ADCs, on-chip noise."""
