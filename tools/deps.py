#!/usr/bin/env python3
"""The file-level call graph of src/host, read from the object files of a build with nm; exit 1
when the files, or the parts (the folders of src/host), call each other in a circle (issue 20:
every layer calls only down).

  tools/deps.py [BUILD]        (default: build; run after `make build`)
  tools/deps.py -q [BUILD]     (print only the circles)
  tools/deps.py --parts [BUILD] (the same graph between the folders of src/host, the parts)

Prints one line per calling file: "caller -> callee: sym, sym", then any circle."""
import os
import subprocess
import sys


def symbols(obj, which):
    out = subprocess.run(["nm", which, obj], check=True, capture_output=True, text=True).stdout
    syms = set()
    for line in out.splitlines():
        parts = line.split()
        if which == "--undefined-only" and len(parts) >= 2 and parts[-2] == "U":
            syms.add(parts[-1])
        elif which == "--defined-only" and len(parts) == 3 and parts[1] in "TDBR":
            syms.add(parts[2])  # global text/data/bss/rodata only: statics are not edges
    return syms


def main(argv):
    quiet = "-q" in argv
    parts = "--parts" in argv
    args = [a for a in argv if a not in ("-q", "--parts")]
    build = args[0] if args else "build"
    root = os.path.join(build, "CMakeFiles", "cnnkit_obj.dir", "src", "host")
    if not os.path.isdir(root):
        print(f"deps: {root} is missing (make build first)", file=sys.stderr)
        return 2
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src", "host")
    objs = {}
    for d, _, files in os.walk(root):
        for f in files:
            if f.endswith(".c.o"):
                path = os.path.join(d, f)
                name = os.path.relpath(path, root)[: -len(".o")]
                if os.path.exists(os.path.join(src, name)):  # skip objects of deleted sources
                    objs[name] = path
    owner = {}
    for name, path in objs.items():
        for s in symbols(path, "--defined-only"):
            owner[s] = name
    edges = {}  # caller -> {callee: [symbols]}
    for name, path in sorted(objs.items()):
        for s in sorted(symbols(path, "--undefined-only")):
            callee = owner.get(s)
            if callee and callee != name:
                edges.setdefault(name, {}).setdefault(callee, []).append(s)
    if parts:  # folder -> folder, with the files that make each edge
        pe = {}
        for a in edges:
            for b in edges[a]:
                pa, pb = os.path.dirname(a), os.path.dirname(b)
                if pa != pb:
                    pe.setdefault(pa, {}).setdefault(pb, set()).add(f"{os.path.basename(a)}>{os.path.basename(b)}")
        for a in sorted(pe):
            for b in sorted(pe[a]):
                print(f"{a} -> {b}: {', '.join(sorted(pe[a][b]))}")
        return 0
    if not quiet:
        for a in sorted(edges):
            for b in sorted(edges[a]):
                print(f"{a} -> {b}: {', '.join(edges[a][b])}")
    comps = circles(sorted(objs), edges)
    for comp in comps:
        print("deps: circle: " + " <-> ".join(comp), file=sys.stderr)
        for a in comp:
            for b in sorted(edges.get(a, {})):
                if b in comp:
                    print(f"  {a} -> {b}: {', '.join(edges[a][b])}", file=sys.stderr)
    # the parts (folders of src/host) must call each other one way too
    pedges = {}
    for a in edges:
        for b in edges[a]:
            pa, pb = os.path.dirname(a), os.path.dirname(b)
            if pa != pb:
                pedges.setdefault(pa, {}).setdefault(pb, []).append(f"{a} -> {b}")
    pcomps = circles(sorted({os.path.dirname(o) for o in objs}), pedges)
    for comp in pcomps:
        print("deps: circle between parts: " + " <-> ".join(comp), file=sys.stderr)
        for a in comp:
            for b in sorted(pedges.get(a, {})):
                if b in comp:
                    print(f"  {a} -> {b}: {', '.join(pedges[a][b])}", file=sys.stderr)
    if comps or pcomps:
        return 1
    if not quiet:
        print(f"deps: {len(objs)} files in {len({os.path.dirname(o) for o in objs})} parts, no circle")
    return 0


def circles(nodes, edges):
    """Tarjan's strongly connected components: each one with more than one node is a circle."""
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in nodes:
        if v not in index:
            visit(v)
    return comps


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
