#!/usr/bin/env python3
"""Reads the dynamic section of ELF shared libraries, for ci/libtorch.sh and its tests.

  libtorch-elf.py closure TREE      every DT_NEEDED of every ELF file under TREE must be a file of the tree
                                    (by name, as the loader looks it up) or a system library of the
                                    allow-list (the C library family, libstdc++, libgcc_s, libcuda.so.1, and
                                    zlib when this machine has it); prints a summary on stderr, or names
                                    each library and the DT_NEEDED nothing provides and exits 1
  libtorch-elf.py needed FILE...    prints "FILE<TAB>NEEDED" for each DT_NEEDED of each file
  libtorch-elf.py needed WHEEL MEMBER...
                                    the same for members of a wheel (zip), read without unpacking them

Only the standard library is used; ELF32/ELF64 of either byte order are read through their program headers,
so a member of a zip is read forward (seeking back only for the string table).
"""
import os
import re
import struct
import sys
import zipfile

# What a machine may provide: the C library family, the C++ runtime, and the NVIDIA driver's libcuda.
SYSTEM = re.compile(
    r"^(libc\.so\.6|libm\.so\.6|libdl\.so\.2|libpthread\.so\.0|librt\.so\.1|libutil\.so\.1|libgcc_s\.so\.1"
    r"|libstdc\+\+\.so\.6|ld-linux[-\w.]*\.so\.\d+|libcuda\.so\.1)$"
)
# Also from the system, but checked to be on this machine: cuDNN's libraries need zlib, which no wheel ships.
ON_THIS_MACHINE = {"libz.so.1": "zlib (zlib1g on Debian and Ubuntu, zlib on RHEL and Fedora)"}

PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SONAME, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 14, 15, 29


def read_at(f, offset, size):
    f.seek(offset)
    data = f.read(size)
    if len(data) != size:
        raise ValueError(f"truncated ELF (wanted {size} bytes at {offset})")
    return data


def dynamic(f):
    """{"soname", "needed", "rpath", "runpath"} of an ELF file object, or None when it is not an ELF file
    or has no dynamic section (a static archive, a text file)."""
    ident = f.read(16)
    if len(ident) < 16 or ident[:4] != b"\x7fELF":
        return None
    bits = {1: 32, 2: 64}[ident[4]]
    end = {1: "<", 2: ">"}[ident[5]]
    if bits == 64:
        ehdr = struct.unpack(end + "HHIQQQIHHHHHH", read_at(f, 16, 48))
        phoff, phentsize, phnum = ehdr[4], ehdr[8], ehdr[9]
        phfmt, dynfmt = end + "IIQQQQQQ", end + "qQ"
    else:
        ehdr = struct.unpack(end + "HHIIIIIHHHHHH", read_at(f, 16, 36))
        phoff, phentsize, phnum = ehdr[4], ehdr[8], ehdr[9]
        phfmt, dynfmt = end + "IIIIIIII", end + "iI"
    loads, dyn = [], None
    table = read_at(f, phoff, phentsize * phnum)
    for i in range(phnum):
        raw = table[i * phentsize:i * phentsize + struct.calcsize(phfmt)]
        if bits == 64:
            p_type, _flags, offset, vaddr, _paddr, filesz, _memsz, _align = struct.unpack(phfmt, raw)
        else:
            p_type, offset, vaddr, _paddr, filesz, _memsz, _flags, _align = struct.unpack(phfmt, raw)
        if p_type == PT_LOAD:
            loads.append((vaddr, offset, filesz))
        elif p_type == PT_DYNAMIC:
            dyn = (offset, filesz)
    if dyn is None:
        return None
    entries, size = [], struct.calcsize(dynfmt)
    data = read_at(f, dyn[0], dyn[1])
    for i in range(0, len(data) - size + 1, size):
        tag, value = struct.unpack(dynfmt, data[i:i + size])
        if tag == DT_NULL:
            break
        entries.append((tag, value))
    strtab = next((v for t, v in entries if t == DT_STRTAB), None)
    strsz = next((v for t, v in entries if t == DT_STRSZ), None)
    if strtab is None or strsz is None:
        raise ValueError("dynamic section without a string table")
    for vaddr, offset, filesz in loads:
        if vaddr <= strtab < vaddr + filesz:
            strings = read_at(f, offset + strtab - vaddr, strsz)
            break
    else:
        raise ValueError("string table outside the loaded segments")

    def string(at):
        return strings[at:strings.index(b"\0", at)].decode()

    first = lambda tag: next((string(v) for t, v in entries if t == tag), None)  # noqa: E731
    return {
        "soname": first(DT_SONAME),
        "needed": [string(v) for t, v in entries if t == DT_NEEDED],
        "rpath": first(DT_RPATH),
        "runpath": first(DT_RUNPATH),
    }


def loadable(soname):
    """Whether the dynamic loader finds a library by that name (ld.so.cache, LD_LIBRARY_PATH, /lib...)."""
    import ctypes
    try:
        ctypes.CDLL(soname)
        return True
    except OSError:
        return False


def closure(tree):
    """Checks that the tree is closed under DT_NEEDED; returns the number of problems."""
    names, elves = set(), []
    for root, dirs, files in os.walk(tree):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            if os.path.islink(path):
                if os.path.exists(path):
                    names.add(name)
                continue
            names.add(name)
            with open(path, "rb") as f:
                try:
                    info = dynamic(f)
                except (ValueError, KeyError, struct.error) as e:
                    print(f"closure: cannot read {os.path.relpath(path, tree)}: {e}", file=sys.stderr)
                    return 1
            if info is not None:
                elves.append((os.path.relpath(path, tree), info))
    problems, system, edges = 0, set(), 0
    for rel, info in elves:
        for needed in info["needed"]:
            edges += 1
            if needed in names:
                continue
            if SYSTEM.match(needed):
                system.add(needed)
                continue
            if needed in ON_THIS_MACHINE:
                if needed not in system and not loadable(needed):
                    problems += 1
                    print(f"closure: {rel} needs {needed}, which this machine lacks: install "
                          f"{ON_THIS_MACHINE[needed]}", file=sys.stderr)
                system.add(needed)
                continue
            problems += 1
            print(f"closure: {rel} needs {needed}, which no file of the tree provides "
                  "(and it is not a system library)", file=sys.stderr)
    if problems == 0:
        print(f"closure: {len(elves)} libraries, {edges} DT_NEEDED entries, all inside the tree or from the "
              f"system ({', '.join(sorted(system))})", file=sys.stderr)
    return problems


def main(argv):
    if len(argv) >= 2 and argv[0] == "closure":
        return 1 if closure(argv[1]) else 0
    if len(argv) >= 2 and argv[0] == "needed":
        if zipfile.is_zipfile(argv[1]):
            with zipfile.ZipFile(argv[1]) as z:
                for member in argv[2:]:
                    with z.open(member) as f:
                        info = dynamic(f)
                    for needed in (info or {}).get("needed", []):
                        print(f"{member}\t{needed}")
        else:
            for path in argv[1:]:
                with open(path, "rb") as f:
                    info = dynamic(f)
                for needed in (info or {}).get("needed", []):
                    print(f"{path}\t{needed}")
        return 0
    print(__doc__.strip(), file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
