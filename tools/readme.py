#!/usr/bin/env python
"""Write README.md from nbs/index.ipynb: `python tools/readme.py` (`--check`: exit 1 if README.md differs).

nbdev's own `nbdev-readme` renders through Quarto, which installs from outside the package registries, so
this does the same job for our index notebook without it: markdown cells verbatim, code cells as fenced
python blocks followed by their text outputs, nbdev directive lines (`#| ...`) removed, cells joined by
one blank line. Cells marked `#| hide` or `#| include: false` are left out."""
import json, pathlib, re, sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
INDEX, README = ROOT / "nbs" / "index.ipynb", ROOT / "README.md"


def split_directives(source: str):
    "({directive: value}, body) of a cell: its leading `#| key[: value]` lines parsed, the rest as text."
    lines, dirs = source.split("\n"), {}
    while lines and lines[0].startswith("#|"):
        m = re.match(r"\s*([\w-]+)\s*:?\s*(.*)", lines.pop(0)[2:])   # `#| key value` or `#| key: value`
        if m: dirs[m.group(1)] = m.group(2).strip() or True
    return dirs, "\n".join(lines).strip("\n")


def text_outputs(cell) -> str:
    "The text a code cell printed or returned (streams and text/plain results), for a README."
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream": out.append("".join(o["text"]))
        elif "text/plain" in o.get("data", {}): out.append("".join(o["data"]["text/plain"]))
    return "".join(out).strip("\n")


def render(nb: dict) -> str:
    "README markdown of a notebook."
    parts = []
    for c in nb["cells"]:
        dirs, body = split_directives("".join(c["source"]))
        if "hide" in dirs or dirs.get("include") == "false" or not body: continue
        if c["cell_type"] == "markdown": parts.append(body)
        elif c["cell_type"] == "code":
            if dirs.get("echo") != "false": parts.append(f"```python\n{body}\n```")
            out = text_outputs(c)
            if out and dirs.get("output") != "false": parts.append(f"```\n{out}\n```")
    return "\n\n".join(parts) + "\n"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    text = render(json.loads(INDEX.read_text(encoding="utf-8")))
    if "--check" in argv:
        if README.read_text(encoding="utf-8") == text: return 0
        print("README.md is not what nbs/index.ipynb generates: edit the notebook, then run python tools/readme.py")
        return 1
    README.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__": sys.exit(main())
