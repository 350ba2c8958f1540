"""Which compiled function of a library an address belongs to, from its ELF symbol table.

Reads the 64-bit little-endian ELF files edgec builds (x86-64 and aarch64) with the
standard library, so that no binutils for the board's architecture is needed.
"""

from __future__ import annotations

import bisect
import struct
from pathlib import Path

from edgec.errors import ArtifactError

_SHT_SYMTAB, _SHT_DYNSYM, _STT_FUNC = 2, 11, 2
# TVM's names around one compiled function `f`: the exported entry `__tvm_ffi_f`, the body
# `f_compute_`, and the parallel-loop lambdas, which have no symbol and sit right after the
# body. So an address belongs to the nearest function symbol at or below it.
_PREFIXES = ("__tvm_ffi_",)
_SUFFIXES = ("_compute_",)


def function_symbols(path: str | Path) -> list[tuple[int, str]]:
    """(address, name) of every function symbol, sorted by address.

    Raises:
        ArtifactError: not a 64-bit little-endian ELF file.
    """
    data = Path(path).read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ArtifactError(f"{path} is not a 64-bit little-endian ELF library")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize)
                for i in range(shnum)]
    # The full table when present (TVM's libraries are not stripped), else the dynamic one.
    tables = [s for s in sections if s[1] == _SHT_SYMTAB] or \
        [s for s in sections if s[1] == _SHT_DYNSYM]
    found = {}
    for _name, _type, _flags, _addr, offset, size, link, _info, _align, entsize in tables:
        strtab = sections[link][4]
        for at in range(offset, offset + size, entsize or 24):
            st_name, st_info, _other, st_shndx, st_value, _size = \
                struct.unpack_from("<IBBHQQ", data, at)
            if st_info & 0xF != _STT_FUNC or st_shndx == 0 or not st_value:
                continue
            end = data.index(b"\0", strtab + st_name)
            found[st_value] = data[strtab + st_name:end].decode(errors="replace")
    return sorted(found.items())


def function_name(symbol: str) -> str:
    """The compiled function a symbol belongs to, as the Relax VM calls it."""
    for prefix in _PREFIXES:
        if symbol.startswith(prefix):
            symbol = symbol[len(prefix):]
    for suffix in _SUFFIXES:
        if symbol.endswith(suffix):
            symbol = symbol[: -len(suffix)]
    return symbol


class SymbolMap:
    """Maps guest addresses to compiled-function names for a library loaded at `base`."""

    def __init__(self, path: str | Path, base: int, text_end: int | None = None):
        symbols = function_symbols(path)
        self.base = base
        self._addrs = [addr for addr, _ in symbols]
        self._names = [function_name(name) for _, name in symbols]
        self._end = text_end if text_end is not None else _text_end(path)

    def name(self, address: int) -> str | None:
        """The function containing `address`, or None when it is not in the library's code."""
        offset = address - self.base
        if offset < 0 or offset >= self._end:
            return None
        i = bisect.bisect_right(self._addrs, offset) - 1
        return self._names[i] if i >= 0 else None


def _text_end(path: str | Path) -> int:
    """End (file-relative address) of the library's executable segment."""
    data = Path(path).read_bytes()
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    end = 0
    for i in range(phnum):
        p_type, p_flags, _off, p_vaddr, _pa, _filesz, p_memsz, _al = \
            struct.unpack_from("<IIQQQQQQ", data, phoff + i * phentsize)
        if p_type == 1 and p_flags & 1:  # PT_LOAD, executable
            end = max(end, p_vaddr + p_memsz)
    return end
