#!/usr/bin/env bash
# Builds aegis-vmtest, a static binary (libbpf, libelf, zlib linked in) that runs in a
# busybox initramfs as well as on the host; see aegis_vmtest.c.
#   bpf/vmtest/build.sh OUTDIR      -> OUTDIR/aegis-vmtest
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?usage: bpf/vmtest/build.sh OUTDIR}"
mkdir -p "$out"
libdir="/usr/lib/$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")"
for a in libbpf.a libelf.a libz.a; do
  [ -f "$libdir/$a" ] || { echo "bpf/vmtest/build.sh: $libdir/$a missing (apt-get install libbpf-dev libelf-dev zlib1g-dev)" >&2; exit 1; }
done
gcc -O2 -Wall -Wextra -Werror -Wno-missing-field-initializers -static \
  -I"$here/.." -o "$out/aegis-vmtest.tmp" "$here/aegis_vmtest.c" \
  "$libdir/libbpf.a" "$libdir/libelf.a" "$libdir/libz.a"
mv "$out/aegis-vmtest.tmp" "$out/aegis-vmtest"
