#!/usr/bin/env python
"""Build the documentation site from the notebooks: `python tools/docs.py` writes `_site/` and checks its links.

Every notebook under `nbs/` (found at build time: `index.ipynb`, the module notebooks, `tutorials/`) becomes
one page named the way nbdev names it (`nbs/00_robot.ipynb` -> `robot.html`, the numeric prefix dropped),
with its prose, its code, its *stored* outputs (nothing is executed) and, after each exported cell, the API
of what that cell exports: signatures and docstrings read from the installed `g1track` module. Beside each
page goes `<page>.html.md`, the same page as plain markdown: the `Docs:` link that ends every module
docstring, and `nbs/llms.txt`, point there. MkDocs (with mkdocs-jupyter and the Material theme) renders the
staged notebooks; `tools/check_links.py` then checks every internal link of the site, and of the module
docstrings and `llms.txt`, and the build fails if one is broken.

Options: `--out DIR` (default `_site`), `--no-check` (skip the link check)."""
import argparse, ast, importlib, inspect, json, os, pathlib, re, shutil, subprocess, sys, time

ROOT = pathlib.Path(__file__).resolve().parents[1]
NBS, STAGE = ROOT / "nbs", ROOT / "_proc" / "docs"
sys.path.insert(0, str(ROOT / "tools"))
from readme import split_directives  # noqa: E402  (one parser of nbdev directives for README and site)

GIT_URL = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1).rstrip("/")
_NUM_PREFIX = re.compile(r"^\d+[a-zA-Z0-9]*_")   # nbdev's nbpath2html: 00a_rotations -> rotations


def notebooks() -> list:
    "Every notebook under nbs/ (relative paths): index first, then top-level notebooks, then subfolders."
    found = [p.relative_to(NBS) for p in NBS.rglob("*.ipynb")
             if not any(part.startswith(("_", ".")) for part in p.relative_to(NBS).parts)]
    return sorted(found, key=lambda r: (r.as_posix() != "index.ipynb", len(r.parts), r.as_posix()))


def page_of(rel: pathlib.Path) -> str:
    "The page a notebook becomes, as nbdev names it: `tutorials/01_robot_and_motion.ipynb` -> `tutorials/robot_and_motion.html`."
    return rel.with_name(_NUM_PREFIX.sub("", rel.name.lower())).with_suffix(".html").as_posix()


# -- links written in the notebooks -----------------------------------------------------------------------
_MD_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_HTML_LINK = re.compile(r"""((?:href|src)=["'])([^"']+)(["'])""")


def rewrite_link(target: str, nb_dir: pathlib.Path) -> str:
    "A relative link of a notebook, fixed for the site: notebooks -> their page, repository files -> GitHub."
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith(("#", "/")): return target
    path, sep, frag = target.partition("#")
    dest = (NBS / nb_dir / path).resolve()
    if path.endswith(".ipynb") and dest.is_file() and NBS in dest.parents:
        page = page_of(dest.relative_to(NBS))
        return os.path.relpath(page, nb_dir.as_posix() or ".") + sep + frag
    if dest.exists() and NBS not in dest.parents and ROOT in dest.parents:   # a file of the repository
        return f"{GIT_URL}/blob/main/{dest.relative_to(ROOT).as_posix()}" + sep + frag
    return target   # an asset beside the notebooks (copied into the site), or broken: the link check says which


def rewrite_links(text: str, nb_dir: pathlib.Path) -> str:
    fix = lambda m: m.group(1) + rewrite_link(m.group(2), nb_dir) + m.group(3)
    return _HTML_LINK.sub(fix, _MD_LINK.sub(fix, text))


# -- the API of an exported cell ---------------------------------------------------------------------------
_QUALIFIED = re.compile(r"\b(?:[A-Za-z_]\w*\.)+([A-Za-z_]\w*)")   # omegaconf.dictconfig.DictConfig -> DictConfig


def _signature(name: str, obj, method: bool = False) -> str:
    try: sig = inspect.signature(obj)
    except (TypeError, ValueError): return name
    if inspect.isclass(obj): sig = sig.replace(return_annotation=inspect.Signature.empty)
    params = [_QUALIFIED.sub(r"\1", str(p)) for p in sig.parameters.values()]
    if method and params and re.match(r"(self|cls)\b", params[0]): params = params[1:]
    ret = "" if sig.return_annotation is inspect.Signature.empty else \
        " -> " + _QUALIFIED.sub(r"\1", inspect.formatannotation(sig.return_annotation))
    one = f"{name}({', '.join(params)}){ret}"
    return one if len(one) <= 100 else f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){ret}"


def _entry(level: str, name: str, obj) -> str:
    doc = inspect.getdoc(obj) or ""
    kind = "class " if inspect.isclass(obj) else ""
    sig = _signature(name.split(".")[-1], obj, method="." in name)
    return f"{level} {name}\n\n```python\n{kind}{sig}\n```\n\n{doc}".rstrip()


def _patched_class(fn: ast.FunctionDef):
    "The class a fastcore `@patch` function is added to (the annotation of its first argument), else None."
    if not any(getattr(d, "id", getattr(d, "attr", None)) == "patch" for d in fn.decorator_list): return None
    ann = fn.args.args[0].annotation if fn.args.args else None
    return getattr(ann, "id", None)


def api_markdown(source: str, module) -> str:
    "Signatures and docstrings of the public functions and classes an exported cell defines (nbdev's show_doc)."
    try: tree = ast.parse(source)
    except SyntaxError: return ""
    out = []
    for node in tree.body:
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or node.name.startswith("_"): continue
        cls = _patched_class(node) if not isinstance(node, ast.ClassDef) else None
        owner = getattr(module, cls, None) if cls else module
        obj = inspect.getattr_static(owner, node.name, None) if owner is not None else None
        if isinstance(obj, (staticmethod, classmethod)): obj = obj.__func__
        if isinstance(obj, property): obj = obj.fget
        if obj is None: continue
        out.append(_entry("####" if cls else "###", f"{cls}.{node.name}" if cls else node.name, obj))
        if isinstance(node, ast.ClassDef):
            for m in node.body:
                if isinstance(m, (ast.FunctionDef, ast.AsyncFunctionDef)) and not m.name.startswith("_") and ast.get_docstring(m):
                    meth = inspect.getattr_static(obj, m.name, None)
                    if isinstance(meth, (staticmethod, classmethod)): meth = meth.__func__
                    if isinstance(meth, property): meth = meth.fget
                    if meth is not None: out.append(_entry("####", f"{node.name}.{m.name}", meth))
    return "\n\n".join(out)


# -- one notebook -> one staged notebook -------------------------------------------------------------------
_HIDE = {"hide", "default_exp"}
_DROP_MIME = ("application/vnd.jupyter.widget-view+json",)   # widgets need a live kernel; their text stays


def stage_notebook(rel: pathlib.Path) -> dict:
    "The notebook as its page shows it: directives gone, links fixed, API after each exported cell."
    nb = json.loads((NBS / rel).read_text(encoding="utf-8"))
    exp = next((d.get("default_exp") for c in nb["cells"] if c["cell_type"] == "code"
                for d in [split_directives("".join(c["source"]))[0]] if d.get("default_exp")), None)
    module = importlib.import_module(f"g1track.{exp}") if exp else None
    cells = []
    for c in nb["cells"]:
        dirs, body = split_directives("".join(c["source"]))
        if _HIDE & dirs.keys() or dirs.get("include") == "false" or not body: continue
        c = {**c, "source": body, "metadata": {}}
        if c["cell_type"] == "markdown":
            cells.append({**c, "source": rewrite_links(body, rel.parent)})
            continue
        if c["cell_type"] != "code": continue
        outputs = []
        for o in ([] if dirs.get("output") == "false" else c.get("outputs", [])):
            if "data" in o:
                o = {**o, "data": {k: v for k, v in o["data"].items() if k not in _DROP_MIME}}
                if "text/html" in o["data"]:
                    html = "".join(o["data"]["text/html"])
                    o["data"]["text/html"] = rewrite_links(html, rel.parent)
            outputs.append(o)
        c["outputs"] = outputs
        if dirs.get("echo") == "false": c["metadata"] = {"tags": ["hide-input"]}
        cells.append(c)
        if module is not None and {"export", "exports"} & dirs.keys():
            api = api_markdown(body, module)
            if api: cells.append({"cell_type": "markdown", "id": f"api-{c.get('id', len(cells))}", "metadata": {}, "source": api})
    return {**nb, "cells": cells, "metadata": {k: v for k, v in nb["metadata"].items() if k != "widgets"}}


def page_markdown(nb: dict) -> str:
    "A staged notebook as plain markdown (`<page>.html.md`): prose, code, text outputs and API; no images."
    parts = []
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown": parts.append(src); continue
        if "hide-input" not in c["metadata"].get("tags", []): parts.append(f"```python\n{src}\n```")
        for o in c.get("outputs", []):
            text = "".join(o.get("text", "")) if o["output_type"] == "stream" else \
                "".join(o.get("data", {}).get("text/markdown", "")) or "".join(o.get("data", {}).get("text/plain", ""))
            if o["output_type"] == "error": text = f"{o['ename']}: {o['evalue']}"
            if text.strip() and not text.startswith("<IPython.core.display"):
                parts.append(text.strip("\n") if "text/markdown" in o.get("data", {}) else f"```\n{text.strip(chr(10))}\n```")
    return "\n\n".join(parts) + "\n"


def title_of(nb: dict, fallback: str) -> str:
    for c in nb["cells"]:
        if c["cell_type"] == "markdown":
            m = re.search(r"^# (.+)$", "".join(c["source"]), re.M)
            if m: return m.group(1).strip()
    return fallback


# -- the site ----------------------------------------------------------------------------------------------
_CODE = re.compile(r"(```.*?```|`[^`\n]*`)", re.S)          # fenced blocks and code spans: their `$` is not math
_MATH = re.compile(r"\$\$(.+?)\$\$|(?<![\\$\w])\$(?=\S)([^$\n]+?)(?<=\S)\$(?![\w$])", re.S)
_MARKDOWN_CHARS = {c: f"&#{ord(c)};" for c in "*_`[]\\"}      # MathML text the markdown renderer must not read as markup


def render_math(text: str) -> str:
    """LaTeX in markdown prose (`$...$` inline, `$$...$$` display) as MathML, which browsers draw with no script and no
    network; code spans and fenced blocks are left alone. The `.html.md` pages keep the LaTeX."""
    from latex2mathml.converter import convert
    def mathml(m) -> str:
        tex, display = (m.group(1), "block") if m.group(1) is not None else (m.group(2), "inline")
        html = convert(tex.strip(), display=display)
        return re.sub(r">([^<]+)<", lambda t: ">" + "".join(_MARKDOWN_CHARS.get(c, c) for c in t.group(1)) + "<", html)
    parts = _CODE.split(text)
    return "".join(p if i % 2 else _MATH.sub(mathml, p) for i, p in enumerate(parts))


def with_math(nb: dict) -> dict:
    "The staged notebook with the math of its markdown cells rendered (what MkDocs gets)."
    return {**nb, "cells": [{**c, "source": render_math(c["source"])} if c["cell_type"] == "markdown" else c for c in nb["cells"]]}


def stage() -> tuple:
    "Write the staged notebooks and every other file of nbs/ into _proc/docs; returns (nav, {page: markdown})."
    shutil.rmtree(STAGE, ignore_errors=True)
    STAGE.mkdir(parents=True)
    for p in NBS.rglob("*"):                      # images, data files, llms.txt: everything but the notebooks
        rel = p.relative_to(NBS)
        if p.is_file() and p.suffix != ".ipynb" and not any(s.startswith(("_", ".")) for s in rel.parts):
            (STAGE / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, STAGE / rel)
    nav, markdown, sections = [], {}, {}
    for rel in notebooks():
        page = page_of(rel)
        if (STAGE / page).with_suffix(".ipynb").exists():
            raise SystemExit(f"two notebooks become the page {page}; rename one of them (nbs/{rel})")
        nb = stage_notebook(rel)
        dest = (STAGE / page).with_suffix(".ipynb")
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(json.dumps(with_math(nb), ensure_ascii=False), encoding="utf-8")
        markdown[page] = page_markdown(nb)
        item = {title_of(nb, rel.stem): pathlib.Path(page).with_suffix(".ipynb").as_posix()}
        if len(rel.parts) == 1: nav.append(item)
        else: sections.setdefault(rel.parts[0].capitalize(), []).append(item)
    return nav + [{k: v} for k, v in sections.items()], markdown


def build(out: pathlib.Path) -> None:
    t0 = time.perf_counter()
    nav, markdown = stage()
    t1 = time.perf_counter()
    cfg = {"INHERIT": os.path.relpath(ROOT / "mkdocs.yml", STAGE.parent), "docs_dir": os.path.relpath(STAGE, STAGE.parent),
           "site_dir": os.path.relpath(out, STAGE.parent), "nav": nav}
    cfg_file = STAGE.parent / "mkdocs.yml"
    cfg_file.write_text(json.dumps(cfg, indent=1))             # JSON is YAML
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}   # its banner is about MkDocs 2.0, not about this site
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet", "-f", str(cfg_file)], cwd=ROOT, env=env)
    if r.returncode: raise SystemExit(f"mkdocs build failed (exit {r.returncode})")
    print(f"docs: {len(markdown)} notebooks staged in {t1 - t0:.1f} s, rendered by MkDocs in {time.perf_counter() - t1:.1f} s")
    for page, md in markdown.items(): (out / (page + ".md")).write_text(md, encoding="utf-8")
    share_notebook_css(out)
    check_math(out)


def check_math(out: pathlib.Path, page: str = "env.html", formula: str = "<msub><mi>q</mi>") -> None:
    "Fail the build unless the environment page's action formula ($q^* = q_{default} + ...$) reached the site as MathML."
    html = (out / page).read_text(encoding="utf-8")
    if "<math" not in html or formula not in html or "q_{default}" in html:
        raise SystemExit(f"{page}: its math was not rendered to MathML (raw LaTeX would show); see render_math in tools/docs.py")


_STYLE = re.compile(r'<style type="text/css">(.*?)</style>', re.S)


def share_notebook_css(out: pathlib.Path, min_size: int = 50_000) -> None:
    "mkdocs-jupyter inlines ~0.6 MB of notebook CSS into every page: move each large style block to one shared file."
    shared = {}
    for page in out.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        def link(m):
            css = m.group(1)
            if len(css) < min_size: return m.group(0)
            name = shared.setdefault(css, f"assets/notebook-{len(shared)}.css")
            return f'<link rel="stylesheet" href="{os.path.relpath(out / name, page.parent)}">'
        new = _STYLE.sub(link, html)
        if new != html: page.write_text(new, encoding="utf-8")
    for css, name in shared.items(): (out / name).write_text(css, encoding="utf-8")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="_site", help="where the site is written (default: _site)")
    ap.add_argument("--no-check", action="store_true", help="skip the link check")
    a = ap.parse_args(argv)
    out = (ROOT / a.out).resolve()
    t0 = time.perf_counter()
    build(out)
    n = len(list(out.rglob("*.html.md")))
    print(f"docs: {n} pages written to {os.path.relpath(out, ROOT)}/ in {time.perf_counter() - t0:.1f} s (open {os.path.relpath(out, ROOT)}/index.html)")
    if a.no_check: return 0
    from check_links import check_site
    return 0 if check_site(out) else 1


if __name__ == "__main__": sys.exit(main())
