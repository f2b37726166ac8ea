#!/usr/bin/env bash
# kemu (tests/kemu/kemu.h): a kernel file as C++ for the host compiler. The launch syntax becomes
# an operator the emulator defines:  k<<<g, b, s, st>>>(a)  ->  k | kemu::cfg(__FILE__, __LINE__, g, b, s, st)(a)
# and each shared-memory declaration a reference to kemu's shared memory (kemu_device.h):
#   __shared__ T name[N][M];  ->  KEMU_SHARED(T, name, [N][M]);
# (one declarator, a type without commas; anything else stops here)
# usage: kemu_rewrite.sh IN.cu OUT.cpp
set -euo pipefail
in="$1" out="$2"
if [ "$(grep -o '<<<' "$in" | wc -l)" != "$(grep -o '>>>' "$in" | wc -l)" ]; then
    echo "kemu_rewrite: $in: '<<<' and '>>>' do not pair up" >&2
    exit 1
fi
tmp="$out.tmp.$$"
{
    printf '#line 1 "%s"\n' "$in"
    sed -E -e 's/<<</ | kemu::cfg(__FILE__, __LINE__, /g' -e 's/>>>/)/g' \
        -e 's/__shared__[[:space:]]+([A-Za-z_]([A-Za-z0-9_:<> ]*[A-Za-z0-9_>])?)[[:space:]]+([A-Za-z_][A-Za-z0-9_]*)[[:space:]]*((\[[^];]*\])*)[[:space:]]*;/KEMU_SHARED(\1, \3, \4);/g' \
        "$in"
} > "$tmp"
if grep -n '__shared__' "$tmp" | grep -v '^[0-9]*:[[:space:]]*\(//\|/\*\|\*\)' >&2; then
    echo "kemu_rewrite: $in: a __shared__ declaration kemu cannot take (see above)" >&2
    rm -f "$tmp"
    exit 1
fi
mv -f "$tmp" "$out"
