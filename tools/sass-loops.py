#!/usr/bin/env python3
"""Instruction mix of every loop in a kernel's SASS, for static issue-rate estimates.

Reads `cuobjdump -sass -fun KERNEL file.cubin` output (stdin or a file) and prints, for each
backward branch, the loop's address range, its instruction count and the count per opcode.
docs/performance.md divides a steady-state loop's weight bytes by its instruction count.

  cuda=$(tools/fetch-cuda-tools.sh)
  $cuda/bin/ptxas -arch=sm_90 target/release/build/torchless-*/out/matmul.ptx -o mm.cubin
  PATH=$cuda/bin:$PATH cuobjdump -sass -fun matvec_q4_k mm.cubin | tools/sass-loops.py

(fetch-cuda-tools.sh brings cuobjdump and the nvdisasm it runs.)
"""

import collections
import fileinput
import re


def main():
    ins = []
    for line in fileinput.input():
        m = re.match(r"\s+/\*([0-9a-f]{4,})\*/\s+(.*?);", line)
        if m:
            ins.append((int(m.group(1), 16), m.group(2).strip()))
    at = {addr: i for i, (addr, _) in enumerate(ins)}
    for i, (addr, text) in enumerate(ins):
        m = re.search(r"\bBRA (0x[0-9a-f]+)", text)
        if not m or "BRA.DIV" in text:
            continue
        target = int(m.group(1), 16)
        if target >= addr or target not in at:
            continue
        body = ins[at[target] : i + 1]
        ops = collections.Counter()
        for _, t in body:
            words = t.split()
            op = words[1] if words[0].startswith("@") else words[0]
            ops[op.split(".")[0]] += 1
        mix = ", ".join(f"{op} {n}" for op, n in ops.most_common())
        print(f"loop {target:#06x}..{addr:#06x}: {len(body)} instructions: {mix}")


if __name__ == "__main__":
    main()
