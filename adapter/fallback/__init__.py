"""Paper fallback (seed 002 s.12): what the patient is handed when the insurer cannot be reached.

``adapter.fallback.paper.render_paper_prescription`` draws the paper prescription (a PDF in
Persian, right to left) carrying every mandatory item of seed 002 s.7 plus the fallback
number as text, QR code and Code128 barcode; ``adapter.fallback.fonts`` finds a
Persian-capable TrueType font on the machine. See ``docs/paper-fallback.md``.
"""
