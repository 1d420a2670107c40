"""fdrl.graphs on every device: what capturing does to the process's cuDNN setting (the capture
itself needs CUDA: tests/test_cuda.py)."""

import pytest
import torch

from fdrl.graphs import cudnn_autotuned


@pytest.mark.parametrize("before", [False, True])
def test_autotuning_is_set_for_its_context_alone_even_when_it_raises(before):
    saved = torch.backends.cudnn.benchmark
    try:
        torch.backends.cudnn.benchmark = before
        for enabled in (False, True):
            with cudnn_autotuned(enabled):
                assert torch.backends.cudnn.benchmark is enabled
            assert torch.backends.cudnn.benchmark is before
        with pytest.raises(RuntimeError), cudnn_autotuned(not before):
            raise RuntimeError("a failed capture")
        assert torch.backends.cudnn.benchmark is before
    finally:
        torch.backends.cudnn.benchmark = saved
