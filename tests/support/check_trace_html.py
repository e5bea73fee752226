#!/usr/bin/env python3
"""Parses a `convoke trace show --format html` page back (tests).

Reads the page from the file named by argv[1]; prints one JSON object:
  {"lifelines": [agent, ...], "messages": [[from, to, message_id, kind], ...],
   "urls": [anything that looks like a URL or an external reference], "title": "..."}
Exits 1 with a message if the HTML is not well-formed enough or the SVG is
not well-formed XML.
"""
import json
import re
import sys
import xml.etree.ElementTree as ET
from html.parser import HTMLParser


class Page(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack = []
        self.title = ""
        self.in_title = False
        self.svgs = 0
        self.external = []

    def handle_starttag(self, tag, attrs):
        self.stack.append(tag)
        if tag == "title" and self.stack[:-1] == ["html", "head"]:
            self.in_title = True
        if tag == "svg":
            self.svgs += 1
        if tag in ("script", "link", "img", "iframe", "object", "embed"):
            self.external.append(tag)
        for name, value in attrs:
            if name in ("src", "href") or (value and re.search(r"(https?:)?//", value)):
                self.external.append(f"{tag} {name}={value}")

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            raise SystemExit(f"unbalanced </{tag}> (open: {self.stack})")
        self.stack.pop()
        if tag == "title":
            self.in_title = False

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        self.stack.pop()

    def handle_data(self, data):
        if self.in_title:
            self.title += data


def main():
    text = open(sys.argv[1], encoding="utf-8").read()
    page = Page()
    # HTML void elements are not closed.
    page.feed(re.sub(r"<meta[^>]*>", "", text))
    page.close()
    if page.stack:
        raise SystemExit(f"unclosed elements: {page.stack}")
    if page.svgs != 1:
        raise SystemExit(f"{page.svgs} svg elements, expected 1")
    svg_text = text[text.index("<svg"): text.index("</svg>") + len("</svg>")]
    try:
        svg = ET.fromstring(svg_text)
    except ET.ParseError as e:
        raise SystemExit(f"the SVG is not well-formed XML: {e}")
    lifelines = []
    messages = []
    for g in svg.iter("g"):
        classes = g.get("class", "").split()
        if "lifeline" in classes:
            if g.find("line") is None or g.find("text") is None:
                raise SystemExit("a lifeline without its line or name")
            lifelines.append(g.get("data-agent"))
        if "message" in classes:
            if g.find("line") is None or g.find("polygon") is None:
                raise SystemExit("a message without its arrow")
            messages.append([g.get("data-from"), g.get("data-to"),
                             int(g.get("data-message-id")), g.get("data-kind")])
    urls = re.findall(r"https?://[^\s\"'<>]*|url\((?!#)[^)]*\)|@import", text)
    print(json.dumps({"lifelines": lifelines, "messages": messages, "urls": urls + page.external,
                      "title": page.title}))


main()
