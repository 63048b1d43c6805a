#!/usr/bin/env bash
# Compiles the BPF programs and generates their libbpf skeleton into OUTDIR.
# The one place the BPF compile flags live: CMakeLists.txt and binding.gyp both call it.
#   bpf/build.sh OUTDIR     -> OUTDIR/aegis.bpf.o, OUTDIR/aegis.skel.h
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: bpf/build.sh OUTDIR}"
mkdir -p "$out"

clang="${CLANG:-$(command -v clang || command -v clang-14 || true)}"
bpftool="${BPFTOOL:-$(command -v bpftool || echo /usr/sbin/bpftool)}"
[ -n "$clang" ] || { echo "bpf/build.sh: clang not found (apt-get install clang)" >&2; exit 1; }
[ -x "$bpftool" ] || { echo "bpf/build.sh: bpftool not found (apt-get install bpftool)" >&2; exit 1; }

# asm/types.h lives under the multiarch include dir; -target bpf does not search it.
multiarch="$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")"

"$clang" -g -O2 -Wall -Werror -target bpf \
  -I"$here" -I"/usr/include/$multiarch" \
  -c "$here/aegis.bpf.c" -o "$out/aegis.bpf.o.tmp"
# Strip DWARF but keep BTF: smaller object embedded in the skeleton.
llvm-strip -g "$out/aegis.bpf.o.tmp" 2>/dev/null || llvm-strip-14 -g "$out/aegis.bpf.o.tmp" 2>/dev/null || true
mv "$out/aegis.bpf.o.tmp" "$out/aegis.bpf.o"
"$bpftool" gen skeleton "$out/aegis.bpf.o" name aegis_bpf > "$out/aegis.skel.h.tmp"
mv "$out/aegis.skel.h.tmp" "$out/aegis.skel.h"
