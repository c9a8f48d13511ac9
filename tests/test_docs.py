"""The documentation: notebook sizes, README.md generated from nbs/index.ipynb, and the docs tools.

The full site build and its link check (`python tools/docs.py`, the README's docs command) take tens of
seconds, so `.ci/run` runs them after the tests; here the pieces are checked quickly."""
import json, pathlib, re, subprocess, sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import check_links, docs, readme  # noqa: E402

MAX_NOTEBOOK_BYTES = 300_000


@pytest.mark.parametrize("nb", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "nbs").rglob("*.ipynb")
                                      if ".ipynb_checkpoints" not in p.parts))
def test_notebook_is_under_300_kb(nb):
    size = (ROOT / nb).stat().st_size
    assert size < MAX_NOTEBOOK_BYTES, (
        f"{nb} is {size / 1000:.0f} KB (limit {MAX_NOTEBOOK_BYTES / 1000:.0f} KB): write large videos and images to files "
        f"beside the notebook (e.g. nbs/images/) and show them by reference, or make them smaller (g1track.viz.show_video "
        f"encodes at crf 30: re-executing a notebook that shows videos with it shrinks them ~6x)")


def test_readme_is_generated_from_index_notebook():
    assert (ROOT / "README.md").read_text(encoding="utf-8") == readme.render(json.loads((ROOT / "nbs/index.ipynb").read_text())), \
        "README.md differs from nbs/index.ipynb: edit the notebook, then run python tools/readme.py"
    r = subprocess.run([sys.executable, str(ROOT / "tools/readme.py"), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout


def test_readme_renders_directives_away_and_text_outputs(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "source": ["#| export\n", "Intro."]},
                    {"cell_type": "markdown", "source": ["#| hide\n", "hidden"]},
                    {"cell_type": "code", "source": ["#| eval: false\n", "print(1)"], "outputs": [
                        {"output_type": "stream", "name": "stdout", "text": ["1\n"]}]}]}
    assert readme.render(nb) == "Intro.\n\n```python\nprint(1)\n```\n\n```\n1\n```\n"


def _fenced_command(marker):
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"^<!-- {marker} -->\n```bash\n(.+)\n```", text, re.M)
    return m and m.group(1)


def test_readme_gives_the_test_and_docs_commands_ci_runs():
    assert _fenced_command("test-command") == "bash test.sh"          # sets up .venv, then python -m pytest -q
    assert _fenced_command("docs-command") == "python tools/docs.py"
    ci = (ROOT / ".ci/run").read_text()
    assert "readme_cmd docs-command" in ci and "readme_cmd test-command" in ci
    assert "_site/" in (ROOT / ".gitignore").read_text().split()


def test_pages_are_named_as_nbdev_names_them_and_found_at_build_time():
    from nbdev.config import nbpath2html
    found = docs.notebooks()
    on_disk = {p.relative_to(ROOT / "nbs") for p in (ROOT / "nbs").rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts}
    assert set(found) == on_disk and found[0].as_posix() == "index.ipynb"
    assert any(len(p.parts) > 1 for p in found), "the tutorials are pages too"
    for rel in found: assert docs.page_of(rel) == nbpath2html(rel).as_posix()
    assert docs.page_of(pathlib.Path("00_robot.ipynb")) == "robot.html"
    pages = [docs.page_of(r) for r in found]
    assert len(pages) == len(set(pages)), "two notebooks would become the same page"


def test_every_printed_docs_link_names_a_notebook_page():
    "The `Docs:` links of module docstrings and nbs/llms.txt point at <page>.html.md, which the build writes per notebook."
    pages = {docs.page_of(r) + ".md" for r in docs.notebooks()}
    printed = check_links.printed_links()
    assert any(w.startswith("g1track/") for w, _ in printed) and any(w == "nbs/llms.txt" for w, _ in printed)
    missing = [(w, u) for w, u in printed if u[len(check_links.DOC_URL):] not in pages]
    assert not missing, f"links to pages no notebook makes: {missing}"


def test_staged_page_has_prose_code_outputs_and_api():
    nb = docs.stage_notebook(pathlib.Path("00_robot.ipynb"))
    md = docs.page_markdown(nb)
    assert "# The G1 robot" in md and "```python\ng1 = load_g1()" in md        # prose, code
    assert "m.nq=36" in md                                                    # a stored output, not re-executed
    assert "### load_g1\n\n```python\nload_g1(cfg: DictConfig | None = None, visual: bool = True) -> G1\n```" in md
    assert "#### G1.joint_ids" in md and "Indices into `joint_names`" in md  # methods with their docstrings
    assert not any("".join(c["source"]).startswith("#|") for c in nb["cells"]), "nbdev directives are not shown"


def test_notebook_links_are_rewritten_to_pages_and_repository_files():
    here = pathlib.Path("tutorials")
    assert docs.rewrite_link("../00_robot.ipynb#rendering", here) == "../robot.html#rendering"
    assert docs.rewrite_link("../../README.md", here) == f"{docs.GIT_URL}/blob/main/README.md"
    assert docs.rewrite_link("https://example.org/x.ipynb", here) == "https://example.org/x.ipynb"
    assert docs.rewrite_link("../images/track_real_curve.png", here) == "../images/track_real_curve.png"


def test_link_checker_finds_broken_internal_and_printed_links(tmp_path, monkeypatch, capsys):
    site = tmp_path / "site"
    (site / "sub").mkdir(parents=True)
    (site / "index.html").write_text('<a href="sub/page.html#x">ok</a> <img src="missing.png"> '
                                     '<a href="https://example.org/">external</a> <a href="#top">same page</a>'
                                     f'<a href="{check_links.DOC_URL}sub/page.html">published</a>'
                                     '<link href="/g1track/gone.css">')
    (site / "sub/page.html").write_text('<a href="../index.html">up</a> <script src="../nowhere.js"></script>')
    monkeypatch.setattr(check_links, "printed_links", lambda: [("g1track/x.py", check_links.DOC_URL + "sub/page.html"),
                                                               ("nbs/llms.txt", check_links.DOC_URL + "absent.html.md")])
    assert not check_links.check_site(site)
    out = capsys.readouterr().out
    broken = sorted(re.findall(r"broken link in (\S+): (\S+)", out))
    assert broken == [("index.html", "/g1track/gone.css"), ("index.html", "missing.png"),
                      ("nbs/llms.txt", check_links.DOC_URL + "absent.html.md"), ("sub/page.html", "../nowhere.js")]
    (site / "missing.png").write_bytes(b""); (site / "gone.css").write_text(""); (site / "nowhere.js").write_text("")
    monkeypatch.setattr(check_links, "printed_links", lambda: [])
    assert check_links.check_site(site)


def test_math_in_prose_becomes_mathml_and_code_keeps_its_dollars():
    html = docs.render_math(r"targets $q^* = q_{default} + s\,a$, shell `echo $HOME $x$`, display $$\sum_i x_i$$, prices $5 or $10")
    assert html.count("<math") == 2 and 'display="block"' in html and "<msub><mi>q</mi>" in html
    assert "`echo $HOME $x$`" in html and "$5 or $10" in html and "q_{default}" not in html
    assert "&#42;" not in docs.render_math("`$a*b$`")                     # code is left as it was
    assert ">*<" not in docs.render_math("$q^*$ and *emphasis*")          # a MathML `*` is not markdown emphasis


def test_staged_env_page_carries_its_formula_as_mathml_and_the_markdown_page_keeps_latex():
    nb = docs.stage_notebook(pathlib.Path("03_env.ipynb"))
    assert "q_{default}" in docs.page_markdown(nb)
    prose = "".join(c["source"] for c in docs.with_math(nb)["cells"] if c["cell_type"] == "markdown")
    assert "<msub><mi>q</mi>" in prose and "q_{default}" not in prose
