"""Write the binary and deliberately broken sample files under ``tests/fixtures/files/``.

The text fixtures (.md, .html, .txt, .json, .jsonl) are written by hand and live in the repository; this
script makes the ones that need a generator. fpdf2 is not a ragserve dependency, so run the script from a
scratch environment:

    python -m venv /tmp/fixgen && /tmp/fixgen/bin/pip install fpdf2 python-docx
    /tmp/fixgen/bin/python scripts/make_fixture_files.py

The output is committed; rerun only when a fixture has to change.
"""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import docx  # type: ignore[import-not-found, import-untyped, unused-ignore]
from docx.shared import Pt  # type: ignore[import-not-found, import-untyped, unused-ignore]
from fpdf import FPDF  # type: ignore[import-not-found, import-untyped, unused-ignore]
from PIL import Image, ImageDraw  # type: ignore[import-not-found, import-untyped, unused-ignore]

OUT_DIR = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "files"
FIXED_DATE = datetime(2024, 3, 12, tzinfo=UTC)

PAGE_ONE = [
    "Quarterly Reliability Report",
    "This report covers the availability of the search service between January and March. "
    "The service answered 99.95% of requests within the latency objective, e.g. under 300 ms at the 95th "
    "percentile.",
    "Two incidents caused most of the missed budget. Both were traced to the vector index being rebuilt "
    "while traffic was still routed to the node.",
]
PAGE_TWO = [
    "Remediation",
    "Index rebuilds now happen on a standby replica. Traffic moves to the replica only after a warm-up "
    "query set passes, which takes about 40 seconds.",
    "We expect the next quarter to stay within budget. Dr. Okafor's team will review the alert thresholds in April.",
]


def _text_pdf(pages: list[list[str]]) -> FPDF:
    pdf = FPDF(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title("Quarterly Reliability Report, Q1")
    pdf.set_font("Helvetica", size=11)
    for paragraphs in pages:
        pdf.add_page()
        pdf.set_font("Helvetica", style="B", size=14)
        pdf.multi_cell(0, 8, paragraphs[0], new_x="LMARGIN", new_y="NEXT")
        pdf.ln(4)
        pdf.set_font("Helvetica", size=11)
        for paragraph in paragraphs[1:]:
            pdf.multi_cell(0, 6, paragraph, new_x="LMARGIN", new_y="NEXT")
            pdf.ln(6)
    return pdf


def make_pdfs() -> None:
    """A two-page text PDF, the same PDF behind a user password, and a page that is only a picture."""
    (OUT_DIR / "report.pdf").write_bytes(bytes(_text_pdf([PAGE_ONE, PAGE_TWO]).output()))

    locked = _text_pdf([PAGE_ONE])
    locked.set_encryption(owner_password="owner-secret", user_password="user-secret")
    (OUT_DIR / "encrypted.pdf").write_bytes(bytes(locked.output()))

    picture = Image.new("L", (240, 120), color=255)
    draw = ImageDraw.Draw(picture)
    for row in range(6):
        draw.rectangle((20, 15 + row * 16, 200 - row * 20, 22 + row * 16), fill=30)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    scanned = FPDF(format="A4")
    scanned.set_creation_date(FIXED_DATE)
    scanned.add_page()
    scanned.image(io.BytesIO(buffer.getvalue()), x=10, y=10, w=120)
    (OUT_DIR / "scanned.pdf").write_bytes(bytes(scanned.output()))


def make_docx() -> None:
    """A Word file with a Title, two heading levels, a table and body text."""
    document = docx.Document()
    document.core_properties.created = FIXED_DATE
    document.core_properties.modified = FIXED_DATE
    document.add_paragraph("Onboarding Guide", style="Title")
    document.add_paragraph("Welcome to the platform team. This guide lists what to set up in week one.")
    document.add_heading("Accounts", level=1)
    document.add_paragraph("Ask your manager for access to the code host and the on-call rota.")
    document.add_heading("Laptop", level=2)
    body = document.add_paragraph("Install the VPN client before your first day. ")
    body.add_run("Use the company profile, not a personal one.").font.size = Pt(11)
    document.add_heading("Contacts", level=1)
    table = document.add_table(rows=3, cols=2)
    contacts = [("Team", "Channel"), ("Platform", "#platform"), ("Security", "#sec")]
    for row, (team, channel) in enumerate(contacts):
        table.cell(row, 0).text = team
        table.cell(row, 1).text = channel
    document.add_paragraph("Questions not covered here go to the #platform channel.")
    buffer = io.BytesIO()
    document.save(buffer)
    (OUT_DIR / "onboarding.docx").write_bytes(buffer.getvalue())


def make_broken() -> None:
    """Files that must be rejected: they claim a type their bytes are not."""
    (OUT_DIR / "garbage.pdf").write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 4 + b"\n%%EOF\n")

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "This zip archive holds no Word document.")
    (OUT_DIR / "notadocx.docx").write_bytes(buffer.getvalue())

    # The first bytes of an ELF executable: NUL bytes that any text decoder would accept.
    (OUT_DIR / "binary.txt").write_bytes(b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" * 16)
    (OUT_DIR / "invalid-utf8.txt").write_bytes("Café au lait, crème brûlée.\n".encode("cp1252"))
    (OUT_DIR / "bad.json").write_bytes(b'{"title": "Release notes", "text": "Fixed the login bug",\n')


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    make_pdfs()
    make_docx()
    make_broken()
    for path in sorted(OUT_DIR.iterdir()):
        print(f"{path.stat().st_size:>8}  {path.name}")


if __name__ == "__main__":
    main()
