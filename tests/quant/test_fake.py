"""Fake-quant modules: the QAT forward equals the integer path bit for bit; gradients are the twins'."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from vitforge.quant import fake
from vitforge.quant import nonlinear as nl
from vitforge.quant.config import DEFAULT_NUMERICS as N
from vitforge.quant.fixed import INT8, requantize
from vitforge.quant.ops import gemm, gemm_acc, residual_add

seeds = st.integers(0, 2**31 - 1)


def calibrated(module, inputs_fn):
    fake.set_mode(module, "calibrate")
    module(*inputs_fn())
    fake.set_mode(module, "qat")
    return module


def quantized_input(shape, g, bits=8):
    act = fake.QuantAct(bits=bits)
    x = torch.randn(shape, generator=g) * 2
    calibrated(act, lambda: (x,))
    return act(x)


@given(seeds)
def test_quant_linear_equals_the_integer_gemm(seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, sx = quantized_input((3, 5, 24), g)
    lin = calibrated(fake.QuantLinear(24, 16), lambda: (x, None))
    y, sy = lin(x, sx)
    p = lin.integer_params(sx)
    want = gemm(fake.codes_of(x, sx), p["w"].T, p["b"], p["mult"], p["shift"])
    assert torch.equal(fake.codes_of(y, sy), want)
    # the weight codes are the per-channel quantization of the float weights
    assert int(p["w"].abs().amax(dim=1).min()) == 127


@given(seeds)
def test_nonlinear_modules_equal_the_integer_units(seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-128, 128, (4, 9), generator=g)
    for module, fmt_in, fmt_out, ref in [
        (fake.QuantGELU(N), N.gelu_in, N.gelu_out, lambda q: nl.int_gelu(q, N.gelu_in, N.gelu_out)),
        (fake.QuantSigmoid(N), N.sigmoid_in, N.sigmoid_out, lambda q: nl.int_sigmoid(q, N.sigmoid_in, N.sigmoid_out)),
        (fake.QuantSoftmax(N), N.softmax_in, N.softmax_out,
         lambda q: nl.int_softmax(q, N.softmax_in, N.softmax_out, N.exp_out)),
    ]:
        fake.set_mode(module, "qat")
        y, sy = module(x.to(torch.float32) * fmt_in.scale, fmt_in.scale)
        assert sy == fmt_out.scale
        assert torch.equal(fake.codes_of(y, sy), ref(x)), type(module).__name__


@given(seeds)
def test_layernorm_add_and_matmul_equal_the_integer_path(seed):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, sx = quantized_input((2, 6, 16), g)
    ln = fake.QuantLayerNorm(16)
    with torch.no_grad():
        ln.norm.weight.uniform_(0.5, 1.5)
        ln.norm.bias.uniform_(-0.3, 0.3)
    calibrated(ln, lambda: (x, None))
    y, sy = ln(x, sx)
    p = ln.integer_params(sx)
    want = nl.int_layernorm(fake.codes_of(x, sx), p["gamma"], p["beta"], p["mult"], p["shift"], INT8, p["eps_q"])
    assert torch.equal(fake.codes_of(y, sy), want)

    add = calibrated(fake.QuantAdd(), lambda: (x, None, y, None))
    z, sz = add(x, sx, y, sy)
    ma, mb, sh = add.requant_params(sx, sy)
    assert torch.equal(fake.codes_of(z, sz), residual_add(fake.codes_of(x, sx), fake.codes_of(y, sy), ma, mb, sh))

    mm = calibrated(fake.QuantMatMul(out_fmt=N.softmax_in, gain=0.25), lambda: (x, None, y.transpose(-1, -2), None))
    a, sa = mm(x, sx, y.transpose(-1, -2), sy)
    mult, shift = mm.requant_params(sx, sy)
    want = requantize(gemm_acc(fake.codes_of(x, sx), fake.codes_of(y, sy).transpose(-1, -2)), mult, shift, N.softmax_in)
    assert sa == N.softmax_in.scale
    assert torch.equal(fake.codes_of(a, sa), want)


def test_train_and_eval_forwards_are_identical_and_gradients_flow():
    g = torch.Generator().manual_seed(1)
    x, sx = quantized_input((2, 4, 8), g)
    lin = calibrated(fake.QuantLinear(8, 8, out_fmt=N.gelu_in), lambda: (x, None))
    act = fake.QuantGELU(N)
    fake.set_mode(act, "qat")
    lin.train()
    y_train = act(*lin(x, sx))[0]
    lin.eval()
    with torch.no_grad():
        y_eval = act(*lin(x, sx))[0]
    assert torch.equal(y_train.detach(), y_eval)
    y_train.sum().backward()
    assert lin.linear.weight.grad is not None and float(lin.linear.weight.grad.abs().sum()) > 0


def test_ste_passes_the_twin_gradient():
    x = torch.linspace(-3, 3, 97, requires_grad=True)
    twin = torch.sigmoid(x)
    y = fake.ste(torch.round(twin * 8) / 8, twin)
    y.sum().backward()
    assert torch.allclose(x.grad, twin.detach() * (1 - twin.detach()))
    assert torch.equal(y.detach(), torch.round(twin.detach() * 8) / 8)


def test_misuse_is_refused():
    lin = fake.QuantLinear(4, 4)
    fake.set_mode(lin, "qat")
    with pytest.raises(RuntimeError, match="calibrate"):
        lin(torch.zeros(1, 4), 0.1)
    gelu = fake.QuantGELU(N)
    fake.set_mode(gelu, "qat")
    with pytest.raises(ValueError, match=r"gelu in .qat. mode takes inputs in its fixed format s8\.4"):
        gelu(torch.zeros(3), 0.3)
    with pytest.raises(ValueError, match="mode must be one of"):
        fake.set_mode(gelu, "int4")
