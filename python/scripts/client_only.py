"""Strips the server half from generated *_pb2_grpc.py files, leaving the client stubs.

troupe's Python package is a client: the generated servicer base classes (whose methods only
raise "Method not implemented") and add_*_to_server helpers are never used, so they are not
kept. Usage: python client_only.py FILE...
"""

import ast
import sys


def strip(path: str) -> None:
    with open(path, encoding="utf-8") as handle:
        source = handle.read()
    lines = source.splitlines(keepends=True)
    drop = set()
    for node in ast.parse(source).body:
        server_side = (isinstance(node, ast.ClassDef) and node.name.endswith("Servicer")) or (
            isinstance(node, ast.FunctionDef) and node.name.endswith("_to_server")
        )
        if server_side:
            start = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            drop.update(range(start - 1, node.end_lineno))
    kept = "".join(line for index, line in enumerate(lines) if index not in drop)
    while "\n\n\n\n" in kept:
        kept = kept.replace("\n\n\n\n", "\n\n\n")
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(kept)


if __name__ == "__main__":
    for file in sys.argv[1:]:
        strip(file)
