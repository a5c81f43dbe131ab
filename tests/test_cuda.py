"""CUDA paths against the CPU (marked ``cuda``: they skip without a GPU; ``scripts/gpu_check.sh``
runs them with ``pytest -m cuda``)."""

from __future__ import annotations

import pytest
import torch

from digan.render import Light, MeshRenderer, RendererConfig, View
from digan.render.pytorch3d_backend import pytorch3d_available

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
]


def _scene(s: int, b: int = 2, device: str = "cpu"):
    lin = torch.linspace(-1, 1, s)
    yy, xx = torch.meshgrid(lin, lin, indexing="ij")
    depth = (1.06 - 0.12 * torch.exp(-(xx**2 + yy**2) / 0.25)).expand(b, 1, s, s).clone()
    albedo = torch.stack([torch.sin(3 * xx), torch.cos(2 * yy), xx * yy]).expand(b, 3, s, s).clone()
    views = {
        "canonical": View(torch.zeros(b, 3), torch.zeros(b, 3)),
        "posed": View(torch.tensor([[10.0, 25.0, 5.0], [-5.0, -35.0, 0.0]])[:b], torch.tensor([[0.01, 0.0, 0.02], [0.0, -0.01, 0.0]])[:b]),
    }
    return depth.to(device), albedo.to(device), views


def _render(backend: str, device: str, view_name: str, s: int = 96):
    depth, albedo, views = _scene(s, device=device)
    d = depth.clone().requires_grad_()
    a = albedo.clone().requires_grad_()
    light = Light.make(0.4, 0.6, 0.3, -0.2, batch=2).to(device)
    out = MeshRenderer(RendererConfig(image_size=s, backend=backend)).render(d, a, views[view_name].to(device), light)
    (out.image.square().sum() + out.depth.sum()).backward()
    return out, d.grad, a.grad


def _cos(a, b) -> float:
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    return float(a @ b / (a.norm() * b.norm()))


@pytest.mark.parametrize("view_name", ["canonical", "posed"])
def test_torch_renderer_on_cuda_matches_cpu(view_name):
    o_cpu, gd_cpu, ga_cpu = _render("torch", "cpu", view_name)
    o_gpu, gd_gpu, ga_gpu = _render("torch", "cuda", view_name)
    assert torch.equal(o_cpu.mask, o_gpu.mask.cpu())
    assert torch.allclose(o_cpu.image, o_gpu.image.cpu(), atol=1e-5)
    assert torch.allclose(o_cpu.depth, o_gpu.depth.cpu(), atol=1e-5)
    assert _cos(gd_cpu, gd_gpu) > 0.99999 and _cos(ga_cpu, ga_gpu) > 0.99999


@pytest.mark.skipif(not pytorch3d_available(), reason="pytorch3d is not installed (.venv-p3d has it)")
@pytest.mark.parametrize("view_name", ["canonical", "posed"])
def test_pytorch3d_binned_rasterizer_on_cuda_matches_torch_backend(view_name):
    o_t, gd_t, ga_t = _render("torch", "cuda", view_name)
    o_p, gd_p, ga_p = _render("pytorch3d", "cuda", view_name)
    m_t, m_p = o_t.mask > 0, o_p.mask > 0
    assert float((m_t & m_p).sum()) / float((m_t | m_p).sum()) > 0.9999
    assert _cos(gd_t, gd_p) > 0.9999 and _cos(ga_t, ga_p) > 0.9999


def test_face_models_use_the_cuda_provider_and_run_json_says_so(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime has no CUDA provider: pip install 'digan-bench[gpu]'")
    from onnx import TensorProto, helper

    from digan.faces.onnx_models import open_session
    from digan.utils.provenance import run_info

    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    path = tmp_path / "relu_cuda.onnx"
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    onnx.save(m, str(path))
    _, info = open_session(path, device="cuda")
    assert info.providers[0] == "CUDAExecutionProvider"
    assert run_info("test")["onnx_sessions"]["providers"]["relu_cuda.onnx"][0] == "CUDAExecutionProvider"
