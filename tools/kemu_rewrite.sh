#!/usr/bin/env bash
# kemu (tests/kemu/kemu.h): a kernel file as C++ for the host compiler. The launch syntax becomes
# an operator the emulator defines:  k<<<g, b, s, st>>>(a)  ->  k | kemu::cfg(__FILE__, __LINE__, g, b, s, st)(a)
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
    sed -e 's/<<</ | kemu::cfg(__FILE__, __LINE__, /g' -e 's/>>>/)/g' "$in"
} > "$tmp"
mv -f "$tmp" "$out"
