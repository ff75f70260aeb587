"""course_utils.checks.nb06: each check passes a right answer and fails, with a useful message, on wrong ones."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from reference_copies import references

from course_utils.checks import CheckFailed, nb06
from course_utils.serving import export as export_module
from course_utils.storage import gguf_io as gguf_io_module

# The traps would refuse answers built on the modules themselves.
export, gguf_io = references(export_module), references(gguf_io_module)


def _stub(*args, **kwargs):
    raise NotImplementedError()


# --- permute_qk --------------------------------------------------------------------------------------------------


def test_permute_qk_passes(capsys):
    nb06.permute_qk(gguf_io.permute_qk)
    assert "permute_qk" in capsys.readouterr().out


def _halves_per_head_wrong(weight, n_head):
    return gguf_io.permute_qk(weight, 1)  # ignores the heads: right only for one head


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda w, n: w, "original order"),
    (gguf_io.unpermute_qk, "inverse"),
    (_halves_per_head_wrong, "row"),
    (lambda w, n: gguf_io.permute_qk(w, n)[:-1], "shape"),
    (lambda w, n: gguf_io.permute_qk(w, n).tolist(), "torch.Tensor"),
])
def test_permute_qk_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb06.permute_qk(wrong)


# --- q8_0_quantize -----------------------------------------------------------------------------------------------


def q8_right(x):
    raw = gguf_io.quantize_q8_0(x.reshape(-1, 32))
    return (torch.from_numpy(raw[:, :2].copy().view(np.float16).reshape(-1)),
            torch.from_numpy(raw[:, 2:].copy().view(np.int8)))


def q8_torch_round(x):
    blocks = x.float().reshape(-1, 32)
    scales = blocks.abs().amax(dim=1, keepdim=True) / 127
    inverse = torch.where(scales == 0, torch.zeros_like(scales), 1 / scales)
    return scales.flatten().half(), torch.round(blocks * inverse).to(torch.int8)


def q8_scale_255(x):
    scales, codes = q8_right(x)
    return (scales.float() * 127 / 255).half(), codes


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda x: q8_right(x)[1], "tuple"),
    (lambda x: (q8_right(x)[0].float(), q8_right(x)[1]), "float16"),
    (lambda x: (q8_right(x)[0], q8_right(x)[1].int()), "int8"),
    (lambda x: (q8_right(x)[0][:1], q8_right(x)[1]), "scales shape"),
    (q8_scale_255, "scales differ"),
    (q8_torch_round, "round away from zero"),
])
def test_q8_0_quantize_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb06.q8_0_quantize(wrong)


def test_q8_0_quantize_passes(capsys):
    nb06.q8_0_quantize(q8_right)
    assert "q8_0_quantize" in capsys.readouterr().out


# --- gguf_tensor_bytes -------------------------------------------------------------------------------------------


def bytes_right(shapes, file_type):
    return sum(gguf_io.tensor_bytes(shape, file_type) for shape in shapes)


def test_gguf_tensor_bytes_passes(capsys):
    nb06.gguf_tensor_bytes(bytes_right)
    assert "gguf_tensor_bytes" in capsys.readouterr().out


def _norms_in_type(shapes, file_type):
    """Stores 1-D tensors in the file's type, as if they were one row."""
    return sum(gguf_io.tensor_bytes((1, *s) if len(s) == 1 else s, file_type) for s in shapes)


def _no_fallback(shapes, file_type):
    if file_type != "q8_0":
        return bytes_right(shapes, file_type)
    return sum(4 * int(torch.tensor(s).prod()) if len(s) == 1 else int(torch.tensor(s).prod()) // 32 * 34
               for s in shapes)


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda shapes, t: sum(int(torch.tensor(s).prod()) * 2 for s in shapes), "expected"),
    (_norms_in_type, "1-D tensors"),
    (_no_fallback, "falls back to f16"),
    (lambda shapes, t: sum(int(torch.tensor(s).prod()) for s in shapes) if t == "q8_0" else bytes_right(shapes, t),
     "34 bytes"),
])
def test_gguf_tensor_bytes_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb06.gguf_tensor_bytes(wrong)


# --- point_adapter_at --------------------------------------------------------------------------------------------


def test_point_adapter_at_passes(capsys):
    nb06.point_adapter_at(export.retarget_adapter)
    assert "point_adapter_at" in capsys.readouterr().out


def _edits_in_place(adapter_dir, base, out_dir):
    config_file = adapter_dir / "adapter_config.json"
    config = json.loads(config_file.read_text())
    config["base_model_name_or_path"] = base
    config_file.write_text(json.dumps(config))
    shutil.copytree(adapter_dir, out_dir)


def _config_only(adapter_dir, base, out_dir):
    out_dir.mkdir()
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (out_dir / "adapter_config.json").write_text(json.dumps(config))


def _drops_settings(adapter_dir, base, out_dir):
    shutil.copytree(adapter_dir, out_dir)
    (out_dir / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))


@pytest.mark.parametrize(("wrong", "message"), [
    (_stub, "not written yet"),
    (lambda a, b, o: shutil.copytree(a, o), "base_model_name_or_path"),
    (_edits_in_place, "changed the original"),
    (_config_only, "missing from the copy"),
    (_drops_settings, "other settings"),
    (lambda a, b, o: None, "no adapter_config.json"),
])
def test_point_adapter_at_fails(wrong, message):
    with pytest.raises(CheckFailed, match=message):
        nb06.point_adapter_at(wrong)


# --- the debugging exercise: llama_cpp_tensors --------------------------------------------------------------------


def _converter(q_heads="num_attention_heads", k_heads="num_key_value_heads", permute_v=False):
    """A converter that reorders q with ``q_heads``, k with ``k_heads`` (None: not at all), v too if asked."""

    def llama_cpp_tensors(model):
        config, tensors = model.config, {}
        for name, weight in model.state_dict().items():
            if name.endswith("q_proj.weight"):
                weight = gguf_io.permute_qk(weight, getattr(config, q_heads))
            elif name.endswith("k_proj.weight") and k_heads:
                weight = gguf_io.permute_qk(weight, getattr(config, k_heads))
            elif name.endswith("v_proj.weight") and permute_v:
                weight = gguf_io.permute_qk(weight, config.num_attention_heads)
            tensors[gguf_io.gguf_name(name)] = weight
        return tensors

    return llama_cpp_tensors


def test_llama_cpp_tensors_passes_the_fixed_version(capsys):
    nb06.llama_cpp_tensors_debugged(_converter())
    assert capsys.readouterr().out.startswith("\u2713 llama_cpp_tensors")


@pytest.mark.parametrize("wrong", [
    _stub,
    _converter(k_heads="num_attention_heads", permute_v=True),  # the colleague's version: both bugs
    _converter(k_heads="num_attention_heads"),  # only the keys' head count wrong
    _converter(permute_v=True),  # only the values reordered
    _converter(k_heads=None),  # the keys forgotten
    lambda model: {name: t for name, _, t in gguf_io.llama_tensors(model, permute=False)},  # no reordering at all
])
def test_llama_cpp_tensors_fails_on_the_bugs_with_a_symptom(wrong):
    with pytest.raises(CheckFailed) as failure:
        nb06.llama_cpp_tensors_debugged(wrong)
    message = str(failure.value)
    if wrong is not _stub:
        assert "different model" in message and "num_key_value_heads" not in message


def test_llama_cpp_tensors_refuses_the_workbook_converter():
    from course_utils.checks import DelegationError
    from course_utils.storage import gguf_io as real

    with pytest.raises(DelegationError, match="llama_tensors"):
        nb06.llama_cpp_tensors_debugged(lambda model: {name: t for name, _, t in real.llama_tensors(model)})
