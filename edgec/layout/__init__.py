"""Layout stage: convert conv layers to NCHW, NHWC or packed NCHW{b}c (convert), choose the
channel block (blocks) and let image stems write the packed layout themselves (stems)."""

from edgec.layout.blocks import block_of, choose_block
from edgec.layout.convert import (
    CHOICES,
    apply_layout,
    count_layout_transforms,
    expected_cost_warning,
    resolve,
)

__all__ = ["CHOICES", "apply_layout", "block_of", "choose_block", "count_layout_transforms",
           "expected_cost_warning", "resolve"]
