"""Document blocks: one list, rendered as Markdown and as a self-contained HTML page that say the same."""

import re

from components.document import Bullets, Figure, Heading, Paragraph, table, to_html, to_markdown

BLOCKS = [Heading("Dataset validation: s3://lab/x", 1), Paragraph("**Verdict: usable**"),
          Bullets(("fingerprint: `abc<1>`", "objects: 3")),
          table(("split", "images", "share"), [("train", 3, 0.25), ("**total**", 4, None)], "lrr"),
          table(("loss", "final"), [("train/box_loss", 1.5)]),
          Figure("losses.png", "Losses", b"\x89PNG fake"), Figure("pr_curve.png", "PR curve absent")]


def test_markdown_keeps_marks_alignment_and_writes_images_beside_it() -> None:
    markdown = to_markdown(BLOCKS)
    assert markdown.startswith("# Dataset validation: s3://lab/x\n\n**Verdict: usable**\n\n- fingerprint: `abc<1>`\n")
    assert "| split | images | share |\n|---|---:|---:|\n| train | 3 | 0.250 |\n| **total** | 4 | — |\n" in markdown
    assert "| loss | final |\n|---|---|\n" in markdown
    assert "![Losses](losses.png)" in markdown and "*PR curve absent*" in markdown


def test_html_shows_the_marks_escapes_the_text_and_embeds_the_images() -> None:
    page = to_html(BLOCKS, "Dataset <validation>")
    assert "<title>Dataset &lt;validation&gt;</title>" in page
    assert "<p><strong>Verdict: usable</strong></p>" in page
    assert "<li>fingerprint: <code>abc&lt;1&gt;</code></li>" in page
    assert "<td><strong>total</strong></td><td class=num>4</td><td class=num>—</td>" in page
    assert "<td>train/box_loss</td><td class=num>1.500</td>" in page  # unaligned tables right-align numbers
    assert re.findall(r"src='([^']*)'", page) == ["data:image/png;base64,iVBORyBmYWtl"]
    assert "<p><em>PR curve absent</em></p>" in page and "http" not in page.replace("s3://lab/x", "")
