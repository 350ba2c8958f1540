"""edgec: a deployment compiler for CNN inference on edge CPUs, over Apache TVM.

Importing edgec is cheap and needs no TVM; heavy modules import TVM when used.
"""

__version__ = "0.1.0"
