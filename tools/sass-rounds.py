#!/usr/bin/env python3
"""How many times a matvec kernel waits on memory before it has asked for all of a pass's weights.

A decode matvec is memory bound: its speed is the bytes it has in flight. kernels/matmul.cu's
int8 row loop issues every weight load of a pass before its first dot product, but ptxas
schedules the SASS and may sink loads towards their uses to save registers, so that a warp
waits for DRAM once per step instead of once per pass. This tool shows what ptxas did, without
a GPU:

1. copies kernels/ and marks every weight load (the `load()` bodies of q8dot.cuh) with an
   `.L2::128B` hint, so the SASS tells them (LDG...LTC128B) from x's loads;
2. compiles matmul.cu to PTX with clang as build.rs does and assembles it with ptxas for sm_90
   (what the driver's JIT does on an H100);
3. for each matching kernel prints its registers and, for each innermost loop, the loads in
   issue order: `w` a weight load, `x` another load, `|` where the warp waits for a load it
   issued. "weight rounds" counts the stretches between waits that issue weight loads: 1 means
   all of the loop's weights are requested before the first wait.

A later weight round is not always a second DRAM trip (its lines may have arrived with the
first), so read the sequence, not only the count. The marker does not change the schedule of
the kernels compared here (checked by eye against the unmarked SASS).

  tools/sass-rounds.py                   # the int8 matvecs (matvec_q8_q*, matvec_glu_q8_q*)
  tools/sass-rounds.py 'matvec_q8_q4_k$' --kernels path/to/kernels

Needs clang (apt-get install clang) and tools/fetch-cuda-tools.sh (ptxas, cuobjdump, nvdisasm).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def mark_weight_loads(kdir):
    """Give the weight loads of kdir's q8dot.cuh the .L2::128B hint (tl_ldw* copies of tl_ldnc*)."""
    p = os.path.join(kdir, "prelude.cuh")
    s = open(p).read()
    start = s.index("// 16 bytes at a 16-aligned address.")
    end = s.index("\n}\n", s.index("// A half-word at a 2-aligned address")) + 3
    marked = s[start:end].replace("tl_ldnc", "tl_ldw").replace("ld.global.nc.", "ld.global.nc.L2::128B.")
    open(p, "w").write(s[:end] + marked + s[end:])
    p = os.path.join(kdir, "q8dot.cuh")
    s = open(p).read()
    body = re.compile(r"W load\(const uint8_t\* blk, int p\) \{\n(.*?)\n    \}\n", re.S)
    n = len(body.findall(s))
    if n == 0:
        sys.exit("sass-rounds: no `W load(const uint8_t* blk, int p)` in q8dot.cuh")
    s = body.sub(lambda m: m.group(0).replace("tl_ldnc", "tl_ldw").replace("tlq8_ld4a2", "tlw_ld4a2"), s)
    anchor = "// The four floats at a 16-aligned address."
    helper = ("static __device__ __forceinline__ uint32_t tlw_ld4a2(const uint8_t* p) {\n"
              "    return tl_ldw2(p) | (tl_ldw2(p + 2) << 16);\n}\n")
    open(p, "w").write(s.replace(anchor, helper + anchor, 1))


def sass_instructions(text):
    """(address, instruction, write scoreboard or None, scoreboards waited on) of a SASS dump."""
    out = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);\s*/\* (0x[0-9a-f]+) \*/", line)
        if not m or i + 1 >= len(lines):
            continue
        n = re.search(r"/\* (0x[0-9a-f]+) \*/", lines[i + 1])
        # Volta+ control bits: the top 23 bits of the second word hold stall, yield, write
        # barrier (3 bits, 7 = none), read barrier and the 6-bit wait mask.
        ctrl = (int(n.group(1), 16) >> 41) & 0x1FFFFF
        wb = (ctrl >> 5) & 7
        waits = {b for b in range(6) if (ctrl >> 11) >> b & 1}
        out.append((int(m.group(1), 16), m.group(2), None if wb == 7 else wb, waits))
    return out


def loop_sequence(ins, lo, hi):
    seq, pending = [], set()
    for addr, text, wb, waits in ins:
        if not lo <= addr <= hi:
            continue
        if waits & pending:
            seq.append("|")
            pending -= waits
        if "LDG" in text:
            seq.append("w" if "LTC128B" in text else "x")
            if wb is not None:
                pending.add(wb)
    return re.sub(r"\|+", "|", "".join(seq))


def innermost_loops(ins):
    loops = []
    for addr, text, _, _ in ins:
        m = re.search(r"\bBRA (0x[0-9a-f]+)", text)
        if m and int(m.group(1), 16) < addr:
            loops.append((int(m.group(1), 16), addr))
    return [(lo, hi) for lo, hi in loops
            if not any(lo <= a and b <= hi and (a, b) != (lo, hi) for a, b in loops)]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pattern", nargs="?", default=r"^matvec_(glu_)?q8_q",
                    help="regular expression over kernel names (default: the int8 matvecs)")
    ap.add_argument("--kernels", default=os.path.join(REPO, "kernels"))
    ap.add_argument("--arch", default="sm_90")
    args = ap.parse_args()
    if shutil.which("clang") is None:
        sys.exit("sass-rounds: clang not found (apt-get install clang)")
    cuda = subprocess.run(["bash", os.path.join(REPO, "tools/fetch-cuda-tools.sh")],
                          check=True, capture_output=True, text=True).stdout.strip()
    env = dict(os.environ, PATH=os.path.join(cuda, "bin") + os.pathsep + os.environ["PATH"])
    with tempfile.TemporaryDirectory() as tmp:
        kdir = os.path.join(tmp, "kernels")
        shutil.copytree(args.kernels, kdir)
        mark_weight_loads(kdir)
        ptx, cubin = os.path.join(tmp, "matmul.ptx"), os.path.join(tmp, "matmul.cubin")
        # The flags of build/cuda_compiler.rs (clang).
        subprocess.run(["clang", "-x", "cuda", "--cuda-device-only", "--cuda-gpu-arch=sm_80",
                        "-nocudainc", "-nocudalib", "-Xclang", "-target-feature", "-Xclang",
                        "+ptx75", "-O3", "-std=c++17", "-S", "-I", kdir,
                        os.path.join(kdir, "matmul.cu"), "-o", ptx], check=True)
        info = subprocess.run(["ptxas", f"-arch={args.arch}", "-v", ptx, "-o", cubin], env=env,
                              check=True, capture_output=True, text=True).stderr
        regs = dict(re.findall(r"Function properties for (\w+)\n.*?\n.*?Used (\d+) registers",
                               info))
        names = re.findall(r"^\.visible \.entry (\w+)\(", open(ptx).read(), re.M)
        for name in [n for n in names if re.search(args.pattern, n)]:
            sass = subprocess.run(["cuobjdump", "-sass", "-fun", name, cubin], env=env,
                                  check=True, capture_output=True, text=True).stdout
            ins = sass_instructions(sass)
            print(f"{name}: {regs.get(name, '?')} registers")
            for lo, hi in innermost_loops(ins):
                seq = loop_sequence(ins, lo, hi)
                rounds = sum(1 for part in seq.split("|") if "w" in part)
                if rounds:
                    print(f"  loop {lo:05x}-{hi:05x}: weight rounds {rounds}: {seq}")


if __name__ == "__main__":
    main()
