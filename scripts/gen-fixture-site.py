#!/usr/bin/env python3
"""Generates the static catalogue fixture site in tests/fixtures/catalogue/.

The site is what the example plugin `plugins/catalogue` scrapes in its tests and
in the end-to-end tests: an index page, 15 listing pages of 20 products each and
300 product detail pages. Output is deterministic (seeded random generator, fixed
ordering, LF line endings), so re-running the script reproduces the committed
files byte for byte.

Usage (from anywhere, Python 3.11+, standard library only):

    python3 scripts/gen-fixture-site.py [--out DIR]

The default output directory is tests/fixtures/catalogue/ next to this script's
parent. Only index.html and the catalogue/ subdirectory are (re)written;
README.md is left alone.
"""

from __future__ import annotations

import argparse
import html
import random
import shutil
import sys
import unicodedata
from dataclasses import dataclass
from pathlib import Path

SEED = 42
PAGES = 15
PER_PAGE = 20
TOTAL = PAGES * PER_PAGE
MAX_STOCK = 40

CATEGORIES = [
    "Books",
    "Music",
    "Kitchen",
    "Garden",
    "Toys",
    "Stationery",
    "Electronics",
    "Outdoor",
]

# Words for titles. Several carry accents or other non-ASCII letters so that
# Unicode handling (and normalization) matters to whoever consumes the data.
ADJECTIVES = [
    "Ångström",
    "Naïve",
    "Crème",
    "Zürich",
    "Nordic",
    "Rustic",
    "Vintage",
    "Compact",
    "Smørrebrød",
    "Jalapeño",
    "Gdańsk",
    "Midnight",
    "Copper",
    "Linen",
    "Façade",
    "Bamboo",
    "Señorita",
    "Velvet",
    "Pocket",
    "Hand-made",
    "Straße",
    "Öresund",
    "Arctic",
    "Golden",
]

NOUNS = [
    "Café Table",
    "Notebook",
    "Teapot",
    "Lantern",
    "Record Player",
    "Watering Can",
    "Puzzle Box",
    "Fountain Pen",
    "Headphones",
    "Hiking Boots",
    "Cookbook",
    "Ukulele",
    "Piñata",
    "Bird Feeder",
    "Desk Lamp",
    "Soufflé Dish",
    "Atlas",
    "Kite",
    "Thermos",
    "Résumé Folder",
    "Chess Set",
    "Herb Planter",
    "Bluetooth Speaker",
    "Tent",
]

OPENINGS = [
    "A dependable everyday companion",
    "Our best-selling pick this season",
    "Made in small batches by a family workshop",
    "A thoughtful gift for almost anyone",
    "Designed in Zürich and tested in Reykjavík",
    "Built to last and easy to repair",
    "A crowd favourite at the Saturday market",
    "Lightweight, sturdy and surprisingly affordable",
]

CLOSINGS = [
    "Ships in recycled packaging.",
    "Comes with a two-year warranty.",
    "Customers love the attention to detail.",
    "Pairs nicely with a café au lait.",
    "Each piece is slightly different — that's the charm.",
    "Care instructions are printed on the label.",
    "",
    "",
]

# Items whose title is written in decomposed form (NFD: base letter followed by
# a combining mark), e.g. "Cafe\u0301" instead of "Café". Consumers that compare
# or deduplicate titles need to normalize; 1-based item numbers.
DECOMPOSED = {
    7: "Café au Lait Bowl",
    42: "Ångström Ruler",
    150: "Naïve Still Life Print",
    233: "Crème Brûlée Torch",
    300: "Señor Piñata Deluxe",
}

# Items with characters that must be escaped in HTML; 1-based item numbers.
SPECIAL = {
    13: "Salt & Pepper Mill",
    88: 'The "Little" Library <Boxed Set>',
}

CSS = (
    "body{font-family:sans-serif;margin:2em auto;max-width:50em;color:#222}"
    "article.product{display:inline-block;width:14em;margin:.5em;vertical-align:top}"
    "ul.pager{list-style:none;padding:0}ul.pager li{display:inline;margin-right:1em}"
    ".price{font-weight:bold}"
)


@dataclass(frozen=True)
class Product:
    """One generated product."""

    number: int
    title: str
    price_cents: int
    category: str
    stock: int
    stars: int
    description: str

    @property
    def sku(self) -> str:
        return f"SKU-{self.number:04d}"

    @property
    def file(self) -> str:
        return f"item-{self.number:04d}.html"

    @property
    def page(self) -> int:
        return (self.number - 1) // PER_PAGE + 1

    @property
    def price(self) -> str:
        return f"{self.price_cents // 100}.{self.price_cents % 100:02d}"


def make_products(rng: random.Random) -> list[Product]:
    """The 300 products, in catalogue order."""
    combos = [f"{a} {n}" for a in ADJECTIVES for n in NOUNS]
    reserved = {unicodedata.normalize("NFC", t) for t in [*DECOMPOSED.values(), *SPECIAL.values()]}
    combos = [c for c in combos if unicodedata.normalize("NFC", c) not in reserved]
    titles = rng.sample(combos, TOTAL)
    products = []
    for i, title in enumerate(titles, start=1):
        if i in DECOMPOSED:
            title = unicodedata.normalize("NFD", DECOMPOSED[i])
        elif i in SPECIAL:
            title = SPECIAL[i]
        # roughly one item in eight is sold out, the rest 1..40 in stock
        stock = 0 if rng.random() < 0.125 else rng.randint(1, MAX_STOCK)
        category = rng.choice(CATEGORIES)
        description = f"{rng.choice(OPENINGS)} from our {category.lower()} range."
        closing = rng.choice(CLOSINGS)
        if closing:
            description += " " + closing
        products.append(
            Product(
                number=i,
                title=title,
                price_cents=rng.randint(199, 24999),
                category=category,
                stock=stock,
                stars=rng.randint(1, 5),
                description=description,
            )
        )
    return products


def page_shell(title: str, body: str) -> str:
    """A complete HTML document."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n"
        f"<style>{CSS}</style>\n"
        "</head>\n"
        "<body>\n"
        f"{body}"
        "</body>\n"
        "</html>\n"
    )


def index_page() -> str:
    body = (
        "<h1>Fixture Catalogue</h1>\n"
        "<p>A small static shop used to test dc-host scraper plugins.</p>\n"
        '<p><a href="catalogue/page-1.html">Browse the catalogue</a></p>\n'
    )
    return page_shell("Fixture Catalogue", body)


def listing_page(page: int, products: list[Product]) -> str:
    items = []
    for p in products:
        items.append(
            '<article class="product">'
            f'<h3><a href="{p.file}">{html.escape(p.title)}</a></h3>'
            f'<p class="price">€{p.price}</p>'
            "</article>\n"
        )
    pager = ['<ul class="pager">']
    if page > 1:
        pager.append(f'<li class="previous"><a href="page-{page - 1}.html">previous</a></li>')
    pager.append(f'<li class="current">Page {page} of {PAGES}</li>')
    if page < PAGES:
        pager.append(f'<li class="next"><a href="page-{page + 1}.html">next</a></li>')
    pager.append("</ul>\n")
    body = (
        '<nav class="breadcrumb"><a href="../index.html">Home</a> › Catalogue</nav>\n'
        f"<h1>Catalogue — page {page} of {PAGES}</h1>\n"
        '<section class="products">\n'
        f"{''.join(items)}"
        "</section>\n"
        f"{''.join(pager)}"
    )
    return page_shell(f"Catalogue, page {page} of {PAGES} | Fixture Catalogue", body)


def detail_page(p: Product) -> str:
    title = html.escape(p.title)
    if p.stock == 0:
        availability = "Out of stock"
    else:
        availability = f"In stock ({p.stock} available)"
    stars = "★" * p.stars + "☆" * (5 - p.stars)
    body = (
        '<nav class="breadcrumb">'
        '<a href="../index.html">Home</a> › '
        f'<a href="page-{p.page}.html">Catalogue, page {p.page}</a> › '
        f"<span>{title}</span>"
        "</nav>\n"
        '<div class="product-detail">\n'
        f'<h1 class="title">{title}</h1>\n'
        f'<p class="sku">{p.sku}</p>\n'
        f'<p class="price" data-currency="EUR">{p.price}</p>\n'
        f'<p class="category">{p.category}</p>\n'
        f'<p class="availability" data-stock="{p.stock}">{availability}</p>\n'
        f'<p class="rating" data-stars="{p.stars}">{stars} ({p.stars} of 5)</p>\n'
        f'<div class="description"><p>{html.escape(p.description)}</p></div>\n'
        "</div>\n"
    )
    return page_shell(f"{p.title} | Fixture Catalogue", body)


def write(path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8", newline="\n")


def main(argv: list[str]) -> int:
    default_out = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "catalogue"
    parser = argparse.ArgumentParser(description="Generate the static catalogue fixture site.")
    parser.add_argument("--out", type=Path, default=default_out, help=f"output directory (default: {default_out})")
    args = parser.parse_args(argv)

    out: Path = args.out
    pages_dir = out / "catalogue"
    # start from a clean catalogue/ so no stale pages survive a change of size
    if pages_dir.exists():
        shutil.rmtree(pages_dir)
    pages_dir.mkdir(parents=True)

    rng = random.Random(SEED)
    products = make_products(rng)

    write(out / "index.html", index_page())
    for page in range(1, PAGES + 1):
        chunk = products[(page - 1) * PER_PAGE : page * PER_PAGE]
        write(pages_dir / f"page-{page}.html", listing_page(page, chunk))
    for p in products:
        write(pages_dir / p.file, detail_page(p))

    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {PAGES} listing pages and {len(products)} detail pages to {out} ({size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
