"""The PDF report finds CJK fonts installed after matplotlib cached its font list."""

from __future__ import annotations

import pytest
from matplotlib import font_manager

from model.dicom_out import report


def test_fonts_installed_after_the_cache_are_found(monkeypatch: pytest.MonkeyPatch) -> None:
    manager = font_manager.fontManager
    cjk = [f for f in manager.ttflist if f.name in report.FONT_FALLBACK[1:]]
    if not cjk:
        cjk_files = [p for p in font_manager.findSystemFonts() if "Droid" in p or "Noto" in p]
        if not cjk_files:
            pytest.skip("no CJK fallback font installed (scripts/test.sh installs one)")
    # a font list cached before the CJK font was installed: the font is not in it
    monkeypatch.setattr(
        manager, "ttflist", [f for f in manager.ttflist if f.name not in report.FONT_FALLBACK[1:]]
    )
    report._installed_fonts.cache_clear()
    try:
        fonts = report._installed_fonts()
    finally:
        report._installed_fonts.cache_clear()
    assert fonts[0] == "DejaVu Sans"
    assert set(fonts[1:]) & set(report.FONT_FALLBACK[1:])
