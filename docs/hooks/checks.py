"""mkdocs hooks that keep the documentation in step with the code and the README.

- Every public module of liquid_s4 has a `::: module` directive in docs/api/ (a module added under
  src/liquid_s4 without one is reported). A directive naming a module that does not exist fails in
  mkdocstrings itself.
- Every link from README.md into docs/ points to a page and heading that exist in the built site.

Problems are logged as warnings, which fail `mkdocs build --strict`.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

log = logging.getLogger("mkdocs.hooks.docs_checks")

DIRECTIVE = re.compile(r"^:::\s+([\w.]+)", re.MULTILINE)
README_LINK = re.compile(r"\]\((docs/[^)#\s]*)(?:#([^)\s]+))?\)")


def public_modules(src: Path, package: str) -> list[str]:
    """Dotted names of the package, its subpackages and their modules, none with a '_' name."""
    names = []
    for path in sorted((src / package).rglob("*.py")):
        parts = path.relative_to(src).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if any(p.startswith("_") for p in parts):
            continue
        names.append(".".join(parts))
    return names


def on_pre_build(config) -> None:
    root = Path(config.config_file_path).parent
    documented = set()
    for page in sorted((Path(config.docs_dir) / "api").glob("*.md")):
        documented.update(DIRECTIVE.findall(page.read_text(encoding="utf-8")))
    for name in public_modules(root / "src", "liquid_s4"):
        if name not in documented:
            log.warning(f"module {name} has no '::: {name}' directive in docs/api/*.md")


def on_post_build(config) -> None:
    root = Path(config.config_file_path).parent
    site = Path(config.site_dir)
    readme = (root / "README.md").read_text(encoding="utf-8")
    for target, anchor in README_LINK.findall(readme):
        page = target.removeprefix("docs/")
        if page in ("", "index.md"):
            html = site / "index.html"
        elif page.endswith(".md"):
            html = site / page.removesuffix(".md").removesuffix("index").strip("/") / "index.html"
        else:
            html = site / page / "index.html"
        if not html.is_file():
            log.warning(f"README.md links to {target}, which is not a documentation page")
        elif anchor and f'id="{anchor}"' not in html.read_text(encoding="utf-8"):
            log.warning(f"README.md links to {target}#{anchor}, but that page has no such heading")
