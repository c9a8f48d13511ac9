#!/usr/bin/env python
"""Check the links of a built documentation site: `python tools/check_links.py [SITE_DIR]` (default `_site`).

Every `href` and `src` in every HTML page of the site that stays inside the site (relative, root-relative,
or under the published address `https://g1track.github.io/g1track/`) must name a file of the site. So must
every link to the published address that the package prints: the `Docs:` line of each module docstring
(`g1track/**/*.py`) and the module list of `nbs/llms.txt`; the published prefix is mapped onto SITE_DIR.
External links are not fetched. Exits 1 and lists each broken link with where it was found."""
import pathlib, re, sys
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC_URL = re.search(r'^Documentation = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1).rstrip("/") + "/"
_PRINTED = re.compile(re.escape(DOC_URL) + r"[^\s)\"'<>`]*")


class _Links(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.links = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v: self.links.append(v)


def resolve(link: str, page: pathlib.Path, site: pathlib.Path):
    "The site file a link names (None: not a link into the site, e.g. external, mailto:, a fragment alone)."
    if link.startswith(DOC_URL): return site / unquote(urlsplit(link[len(DOC_URL):]).path)
    u = urlsplit(link)
    if u.scheme or u.netloc or not u.path: return None
    path = unquote(u.path)
    base = urlsplit(DOC_URL).path                       # "/g1track/": where the site is served
    if path.startswith("/"): dest = site / path[len(base):] if path.startswith(base) else site / path.lstrip("/")
    else: dest = page.parent / path
    return dest / "index.html" if path.endswith("/") else dest


def broken_in_site(site: pathlib.Path) -> tuple:
    "(number of internal links checked, [(page, link)] that name no file of the site)."
    n, bad = 0, []
    for page in sorted(site.rglob("*.html")):
        p = _Links()
        p.feed(page.read_text(encoding="utf-8", errors="replace"))
        for link in p.links:
            dest = resolve(link, page, site)
            if dest is None: continue
            n += 1
            if not dest.resolve().is_file() or site.resolve() not in dest.resolve().parents:
                bad.append((page.relative_to(site).as_posix(), link))
    return n, bad


def printed_links() -> list:
    "(where, url) of every published-docs link in the module docstrings and nbs/llms.txt."
    found = []
    for f in sorted((ROOT / "g1track").rglob("*.py")) + [ROOT / "nbs" / "llms.txt"]:
        if f.name == "_modidx.py" or not f.exists(): continue
        for url in _PRINTED.findall(f.read_text(encoding="utf-8")):
            found.append((f.relative_to(ROOT).as_posix(), url.rstrip(".,;:")))
    return found


def check_site(site) -> bool:
    "Print the result of checking `site`; True when every link resolves."
    site = pathlib.Path(site)
    if not (site / "index.html").is_file():
        print(f"links: {site} has no index.html (build the site first: python tools/docs.py)"); return False
    n, bad = broken_in_site(site)
    printed = printed_links()
    bad += [(where, url) for where, url in printed if not resolve(url, site / "index.html", site).is_file()]
    pages = len(list(site.rglob("*.html")))
    for where, link in bad: print(f"broken link in {where}: {link}")
    print(f"links: {n} internal links in {pages} HTML pages and {len(printed)} printed links to {DOC_URL} "
          f"(module docstrings, nbs/llms.txt) checked; {len(bad)} broken")
    return not bad


if __name__ == "__main__": sys.exit(0 if check_site(sys.argv[1] if len(sys.argv) > 1 else ROOT / "_site") else 1)
